"""Dependency audit: run pip-audit on the installed environment and summarise honestly.

Exit codes: 0 audited with no known vulnerability; 1 known vulnerabilities (with
``--strict``); 3 the audit could not run or audited nothing (e.g. the vulnerability
service is unreachable), so an offline run never passes for a clean one.
"""

import json
import subprocess
import sys


def main() -> int:
    """Run the audit and print a summary."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print("pip-audit could not run:", (proc.stderr.strip().splitlines() or ["?"])[-1])
        return 3
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    vulnerable = [d for d in deps if d.get("vulns")]
    audited = len(deps) - len(skipped)
    print(f"pip-audit: {len(deps)} packages, {audited} audited, {len(skipped)} not audited")
    if skipped and not audited:
        print("  the vulnerability service was unreachable from here: NOTHING WAS AUDITED")
    for d in vulnerable:
        ids = ", ".join(v["id"] for v in d["vulns"])
        print(f"  VULNERABLE {d['name']} {d['version']}: {ids}")
    if audited and not vulnerable:
        print("  no known vulnerabilities in the audited packages")
    if not audited:
        return 3
    return 1 if (vulnerable and "--strict" in sys.argv) else 0


if __name__ == "__main__":
    sys.exit(main())
