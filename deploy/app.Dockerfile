# The Streamlit app as it ships (requirements.txt is the deploy file).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8501
# inside a container the app must listen beyond localhost; the proxy in front authenticates
CMD ["python", "-m", "streamlit", "run", "streamlit_app.py", "--server.address", "0.0.0.0"]
