"""The one decoder: odd inputs are rejected with clear messages, odd-but-legal ones converted."""

import io

import numpy as np
import pytest
from PIL import Image

from skin_model.data.imaging import MAX_SIDE, ImageError, decode_image, resize_for_model
from tests.bad_inputs import bad_inputs
from tests.conftest import jpeg_bytes, lesion_image, png_bytes


@pytest.mark.parametrize(("name", "data", "fragment"), bad_inputs(), ids=lambda v: str(v)[:20])
def test_bad_input_rejected_with_message(name, data, fragment):
    with pytest.raises(ImageError) as err:
        decode_image(data)
    assert fragment.lower() in str(err.value).lower()
    assert "Traceback" not in str(err.value)


def test_rgb_jpeg_decodes_to_uint8_rgb():
    out = decode_image(jpeg_bytes(lesion_image("nv", 0)))
    assert out.shape == (150, 200, 3) and out.dtype == np.uint8


def test_greyscale_becomes_three_equal_channels():
    img = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (150, 1)), mode="L")
    out = decode_image(png_bytes(img))
    assert out.shape == (150, 200, 3)
    assert (out[..., 0] == out[..., 2]).all() and out[0, 199, 0] == 199


def test_rgba_is_flattened_onto_black_like_a_dermatoscope_field_of_view():
    arr = np.zeros((64, 64, 4), dtype=np.uint8)
    arr[..., 0] = 255
    arr[:, 32:, 3] = 255  # right half opaque red, left half fully transparent
    out = decode_image(png_bytes(Image.fromarray(arr, mode="RGBA")))
    assert tuple(out[10, 5]) == (0, 0, 0)
    assert tuple(out[10, 50]) == (255, 0, 0)


def test_vignette_blacks_out_the_corners_only():
    from skin_model.data.imaging import dermoscope_vignette

    image = np.full((150, 200, 3), 180, np.uint8)
    out = dermoscope_vignette(image, 0.4)
    assert (out[0, 0] == 0).all() and (out[75, 100] == 180).all()
    assert (dermoscope_vignette(image, 0.51) == image).all()


def test_cmyk_jpeg_converted_to_rgb():
    cmyk = Image.new("CMYK", (80, 60), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", quality=95)
    out = decode_image(buf.getvalue())
    r, g, b = out[30, 40].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_palette_png_converted():
    img = Image.fromarray(lesion_image("bcc", 2)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = decode_image(png_bytes(img))
    assert out.shape == (150, 200, 3) and out.dtype == np.uint8


def test_16bit_png_is_rescaled_not_clipped():
    arr = np.zeros((40, 40), dtype=np.uint16)
    arr[:, :20] = 65535
    arr[:, 20:] = 32768
    out = decode_image(png_bytes(Image.fromarray(arr)))
    assert out[0, 0, 0] == 255
    assert 126 <= out[0, 30, 0] <= 129  # a clip to 8 bits would give 255 here


def test_exif_rotated_jpeg_is_upright():
    img = lesion_image("nv", 5)  # 150 x 200 (landscape)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    out = decode_image(jpeg_bytes(img, exif=exif.tobytes()))
    assert out.shape == (200, 150, 3)


def test_large_legal_photo_is_downscaled():
    big = np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
    out = decode_image(jpeg_bytes(big))
    assert max(out.shape[:2]) == MAX_SIDE and out.shape[1] > out.shape[0]


def test_resize_for_model_shape():
    out = resize_for_model(lesion_image("df", 1), 96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8


def test_a_portrait_file_gives_its_landscape_originals_input():
    image = lesion_image("mel", 3, (150, 200))
    plain = resize_for_model(image, 96).astype(int)
    turned = resize_for_model(np.rot90(image).copy(), 96).astype(int)  # saved a quarter turn
    assert np.abs(turned - plain).max() <= 1  # Pillow's two passes round in another order
    clockwise = resize_for_model(np.rot90(image, -1).copy(), 96).astype(int)
    assert np.abs(clockwise - np.rot90(plain, 2)).max() <= 1  # the other way: a half turn
    square = lesion_image("nv", 1, (96, 96))
    np.testing.assert_array_equal(resize_for_model(square, 96), square)  # left as it is


def test_an_input_of_its_own_aspect_keeps_the_image_s_shape_and_a_portrait_s_turn():
    """``(height, width)``: a 150x200 image keeps its aspect; saved a quarter turn
    counter-clockwise it gives its landscape original's input exactly (turned, then resized).
    """
    image = lesion_image("mel", 3, (150, 200))
    plain = resize_for_model(image, (48, 64))
    assert plain.shape == (48, 64, 3) and plain.dtype == np.uint8
    np.testing.assert_array_equal(resize_for_model(np.rot90(image).copy(), (48, 64)), plain)
    clockwise = resize_for_model(np.rot90(image, -1).copy(), (48, 64))
    np.testing.assert_array_equal(clockwise, np.rot90(plain, 2))
    np.testing.assert_array_equal(resize_for_model(image, (150, 200)), image)
