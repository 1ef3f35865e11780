"""Image dataset zips: the three layouts, and every way an archive or an image can be bad."""

from __future__ import annotations

import io
import json
import stat
import zipfile

import pytest
from PIL import Image

from core.errors import ImportValidationError, InvalidInput, LimitExceeded, PayloadTooLarge
from core.images import decode_image
from tests.support.images import encode, folder_zip, shape_image, zip_bytes
from training.datasets.archives import ArchiveLimits, read_zip
from training.datasets.image_import import ImageLimits, parse_image_archive, single_image

PNG = encode(shape_image("circle", 1), "PNG")
JPG = encode(shape_image("square", 2))


def problems(e: pytest.ExceptionInfo[ImportValidationError]) -> list[str]:
    return [f"{p['file']}: {p['message']}" for p in e.value.details["errors"]]


# --- archives -----------------------------------------------------------------------------


def raw_zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in entries:
            z.writestr(info, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.jpg", "'..'"),
        ("cats/../../evil.jpg", "'..'"),
        ("/etc/evil.jpg", "absolute"),
        ("C:/evil.jpg", "absolute"),
        ("cats\\evil.jpg", "backslash"),
    ],
)
def test_unsafe_member_names_are_refused_by_name(name: str, why: str) -> None:
    with pytest.raises(ImportValidationError, match=why) as e:
        read_zip(raw_zip([(name, PNG)]))
    assert e.value.details["errors"][0]["file"] == name


def test_symlinks_are_refused() -> None:
    link = zipfile.ZipInfo("cats/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(ImportValidationError, match="symbolic link"):
        read_zip(raw_zip([(link, b"/etc/passwd")]))


def test_a_zip_bomb_is_refused_by_ratio_and_total_size() -> None:
    bomb = raw_zip([("cats/zeros.jpg", b"\0" * (20 * 1024 * 1024))])
    assert len(bomb) < 100_000
    with pytest.raises(ImportValidationError, match="zip bomb"):  # by its own ratio
        read_zip(bomb, ArchiveLimits(min_expansion=10**9))
    with pytest.raises(PayloadTooLarge, match="zip bomb"):  # by the archive's (first)
        read_zip(bomb)
    many = raw_zip([(f"c/{i}.bin", bytes(range(256)) * 400) for i in range(5)])
    with pytest.raises(PayloadTooLarge, match="expands to over"):
        read_zip(many, ArchiveLimits(max_total_bytes=300_000))


def test_many_small_compressed_members_are_refused_before_reading() -> None:
    # 1 MB members stay under the per-member ratio check; together they expand far past what
    # a zip of this size may (the bad-input probe: 2,200 of them grew the server by 2 GB)
    bomb = raw_zip([(f"zeros/{i}.jpg", b"\0" * 1024 * 1024) for i in range(40)])
    with pytest.raises(PayloadTooLarge, match="zip bomb") as e:
        read_zip(bomb, ArchiveLimits(min_expansion=1024 * 1024))
    assert e.value.details["limit"] == "max_total_bytes"
    photos = raw_zip([(f"cats/{i}.jpg", bytes(range(256)) * 400) for i in range(3)])
    assert len(read_zip(photos)) == 3  # within the default allowance


def test_clutter_and_folders_are_skipped_and_garbage_is_not_a_zip() -> None:
    data = raw_zip([("__MACOSX/cats/._a.jpg", b"x"), ("cats/.DS_Store", b"x"), ("cats/a.jpg", PNG)])
    assert [m.name for m in read_zip(data)] == ["cats/a.jpg"]
    with pytest.raises(ImportValidationError, match="not a readable zip"):
        read_zip(b"PK\x03\x04 this is not really a zip")


# --- decoding -----------------------------------------------------------------------------


def test_decoding_applies_exif_orientation_and_normalises_modes() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rotated = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert (rotated.width, rotated.height) == (20, 40)
    for mode, fmt in [
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
    ]:
        src = Image.new("RGB", (8, 8), (10, 200, 30)).convert(mode)
        out = decode_image(encode(src, fmt), name=f"{mode}.{fmt}")
        assert out.image.mode == "RGB" and out.image.size == (8, 8)
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_image(encode(transparent, "PNG")).image.getpixel((0, 0)) == (255, 255, 255)


def test_animated_images_give_their_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(out.getvalue())
    assert decoded.frames == 2 and decoded.image.getpixel((5, 5))[0] > 200


def test_bombs_truncation_and_non_images_are_clear_errors() -> None:
    big = encode(Image.new("L", (6000, 6000)), "PNG")
    with pytest.raises(InvalidInput, match="over the limit"):
        decode_image(big, name="huge.png", max_pixels=10_000_000)
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_image(JPG[: len(JPG) // 2], name="cut.jpg")
    with pytest.raises(InvalidInput, match="not an image"):
        decode_image(b"%PDF-1.4 hello", name="doc.pdf")
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", name="nothing.jpg")


# --- layouts ------------------------------------------------------------------------------


def test_image_folders_give_labels_and_a_wrapping_folder_is_dropped() -> None:
    examples = parse_image_archive(folder_zip(2), "image")
    assert sorted({e.label for e in examples}) == ["circle", "square", "triangle"]
    assert all(e.width == 160 and e.height == 120 for e in examples)
    wrapped = zip_bytes({"shapes/circle/a.jpg": JPG, "shapes/square/b.png": PNG})
    assert {e.label for e in parse_image_archive(wrapped, "image")} == {"circle", "square"}


def test_bad_images_and_stray_files_are_all_named_and_nothing_is_kept() -> None:
    data = zip_bytes(
        {
            "circle/ok.jpg": JPG,
            "circle/broken.jpg": JPG[:300],
            "loose.png": PNG,
            "square/deep/x.png": PNG,
        }
    )
    with pytest.raises(ImportValidationError) as e:
        parse_image_archive(data, "image")
    found = "\n".join(problems(e))
    assert "circle/broken.jpg: " in found and "truncated or corrupt" in found
    assert "loose.png: put each image in a folder" in found
    assert "square/deep/x.png: nested too deep" in found


def test_multi_label_from_csv_and_from_folders() -> None:
    csv_zip = zip_bytes(
        {"a.jpg": JPG, "b.png": PNG, "labels.csv": b"file,labels\na.jpg,box|damaged\nb.png,box\n"}
    )
    got = {e.file: e.labels for e in parse_image_archive(csv_zip, "image-multi-label")}
    assert got == {"a.jpg": ["box", "damaged"], "b.png": ["box"]}
    folders = zip_bytes({"box/a.jpg": JPG, "damaged/same.jpg": JPG, "box/b.png": PNG})
    got = {e.file: e.labels for e in parse_image_archive(folders, "image-multi-label")}
    assert got == {"box/a.jpg": ["box", "damaged"], "box/b.png": ["box"]}
    missing = zip_bytes({"a.jpg": JPG, "labels.csv": b"file,labels\na.jpg,x\nghost.jpg,y\n"})
    with pytest.raises(ImportValidationError) as e:
        parse_image_archive(missing, "image-multi-label")
    assert problems(e) == ["labels.csv: names 'ghost.jpg', which is not in the zip"]
    assert e.value.details["errors"][0]["line"] == 3


def test_detection_from_csv_voc_and_coco() -> None:
    # shape_image is 160 x 120
    csv_zip = zip_bytes(
        {
            "img/a.jpg": JPG,
            "img/empty.png": PNG,
            "annotations.csv": b"file,label,x_min,y_min,x_max,y_max\n"
            b"a.jpg,parcel,10,10,60,50\na.jpg,label,70,20,100,40\n",
        }
    )
    got = {e.file: e.boxes for e in parse_image_archive(csv_zip, "image-detection")}
    assert [b["label"] for b in got["img/a.jpg"]] == ["parcel", "label"]
    assert got["img/empty.png"] == []  # a background example
    voc = (
        b"<annotation><filename>a.jpg</filename><object><name>parcel</name><bndbox>"
        b"<xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>"
        b"</annotation>"
    )
    got_voc = parse_image_archive(zip_bytes({"a.jpg": JPG, "a.xml": voc}), "image-detection")
    assert got_voc[0].boxes == [
        {"label": "parcel", "x_min": 1.0, "y_min": 2.0, "x_max": 30.0, "y_max": 40.0}
    ]
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "parcel"}],
        "annotations": [{"image_id": 7, "category_id": 1, "bbox": [5, 5, 20, 10]}],
    }
    got_coco = parse_image_archive(
        zip_bytes({"a.jpg": JPG, "instances.json": json.dumps(coco).encode()}), "image-detection"
    )
    assert got_coco[0].boxes == [
        {"label": "parcel", "x_min": 5.0, "y_min": 5.0, "x_max": 25.0, "y_max": 15.0}
    ]


def test_bad_boxes_are_named_by_row() -> None:
    data = zip_bytes(
        {
            "a.jpg": JPG,
            "annotations.csv": b"file,label,x_min,y_min,x_max,y_max\n"
            b"a.jpg,parcel,10,10,10,50\na.jpg,parcel,100,10,400,50\n"
            b"a.jpg,parcel,x,1,2,3\nb.jpg,parcel,1,1,2,2\n",
        }
    )
    with pytest.raises(ImportValidationError) as e:
        parse_image_archive(data, "image-detection")
    lines = {p["line"]: p["message"] for p in e.value.details["errors"]}
    assert "zero or negative area" in lines[2]
    assert "outside the 160x120 image" in lines[3]
    assert "must be numbers" in lines[4]
    assert "'b.jpg', not in the zip" in lines[5]
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]><annotation>&x;</annotation>'
    with pytest.raises(ImportValidationError, match="DTD or entity"):
        parse_image_archive(zip_bytes({"a.jpg": JPG, "a.xml": bomb}), "image-detection")
    with pytest.raises(ImportValidationError, match="no boxes found"):
        parse_image_archive(zip_bytes({"a.jpg": JPG}), "image-detection")


def test_limits_on_images_and_labels() -> None:
    with pytest.raises(LimitExceeded, match="MAX_EXAMPLES"):
        parse_image_archive(folder_zip(2), "image", limits=ImageLimits(max_examples=5))
    with pytest.raises(LimitExceeded, match="MAX_LABELS"):
        parse_image_archive(folder_zip(1), "image", limits=ImageLimits(max_labels=2))
    with pytest.raises(ImportValidationError, match="over the limit"):
        parse_image_archive(folder_zip(1), "image", limits=ImageLimits(max_pixels=1000))


def test_single_examples_are_checked_like_imported_ones() -> None:
    ok = single_image(
        "a.jpg",
        JPG,
        "image-detection",
        boxes=[{"label": "parcel", "x_min": 1, "y_min": 1, "x_max": 20, "y_max": 20}],
    )
    assert ok.boxes and ok.width == 160
    with pytest.raises(InvalidInput, match="outside"):
        single_image(
            "a.jpg",
            JPG,
            "image-detection",
            boxes=[{"label": "p", "x_min": 1, "y_min": 1, "x_max": 999, "y_max": 20}],
        )
    with pytest.raises(InvalidInput, match="one `label`"):
        single_image("a.jpg", JPG, "image")
    with pytest.raises(InvalidInput, match="not an image"):
        single_image("a.txt", b"hello", "image", label="x")
