"""The HTTP API of `segloc serve`, in process (FastAPI's TestClient): every route, bad requests.

Oracles: segloc's own library functions called directly on the same arrays (the server must
give exactly what the library gives), scikit-image's regionprops for the region table,
pycocotools for the COCO document.
"""

from __future__ import annotations

import gzip
import io as bytesio
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools.coco import COCO
from skimage.measure import label as sk_label
from skimage.measure import regionprops

from segloc import io, metrics
from segloc.classical import segment
from segloc.classical.region_growing import region_grow
from segloc.classical.threshold import threshold_multiotsu, threshold_otsu
from segloc.cli import main
from segloc.coco import box_to_coco
from segloc.engine.infer import Predictor
from segloc.instances import mask_to_boxes
from segloc.masks import fill_holes
from segloc.nn import create_model
from segloc.nn.checkpoint import save_checkpoint
from segloc.serve import Limits, create_app
from segloc.serve.edits import stroke_pixels
from segloc.serve.jobs import Busy, WorkPool
from segloc.serve.uploads import sniff

DATA = Path(os.environ.get("SEGLOC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MiB = 1 << 20


# --------------------------------------------------------------------------- files


def png_bytes(arr: np.ndarray) -> bytes:
    buf = bytesio.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def nifti_bytes(arr: np.ndarray, affine: np.ndarray, *, gz: bool = True) -> bytes:
    img = nib.Nifti1Image(arr, affine)
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def blobs(shape=(64, 64), seed=0) -> np.ndarray:
    """Bright discs on a dark noisy background, uint8."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, 40.0)
    for r, c, rad in [(16, 16, 7), (40, 44, 10), (50, 12, 5)]:
        img[(rows - r) ** 2 + (cols - c) ** 2 <= rad**2] = 200
    return np.clip(img + rng.normal(0, 5, shape), 0, 255).astype(np.uint8)


def volume(shape=(20, 24, 16)) -> np.ndarray:
    rows, cols, slices = np.mgrid[: shape[0], : shape[1], : shape[2]]
    ball = (rows - 10) ** 2 + (cols - 12) ** 2 + (slices - 8) ** 2 <= 25
    return (ball * 500.0 + 100.0 + rows).astype(np.float32)


AFFINE = np.array([[0.8, 0, 0, -10], [0, 0.9, 0, 5], [0, 0, 2.0, 30], [0, 0, 0, 1]])


def make_run(folder: Path, *, dims=2) -> Path:
    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 2, "base_channels": 4, "depth": 2, "dims": dims}
    extra = {
        "dims": dims,
        "in_channels": 1,
        "num_classes": 2,
        "normalize": "zscore",
        "patch_size": [32] * dims,
        "target_spacing": None,
        "ignore_index": None,
        "label_mapping": "auto",
    }
    save_checkpoint(
        folder / "best.safetensors", "unet", kw, create_model("unet", **kw), extra=extra
    )
    return folder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "blobs.png").write_bytes(png_bytes(blobs()))
    (root / "sub" / "vol.nii.gz").write_bytes(nifti_bytes(volume(), AFFINE))
    (root / ".hidden" / "secret.png").write_bytes(png_bytes(blobs()))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def runs_dir(tmp_path):
    make_run(tmp_path / "runs" / "tiny2d")
    make_run(tmp_path / "runs" / "tiny3d", dims=3)
    return tmp_path / "runs"


def client_for(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(data_dir, runs_dir):
    app = create_app(data=data_dir, runs=runs_dir, limits=Limits(max_upload_bytes=8 * MiB))
    with client_for(app) as c:
        yield c


def upload(client, body: bytes, name="x.png", expect=201) -> dict:
    r = client.post(f"/api/sessions?name={name}", content=body)
    assert r.status_code == expect, r.text
    return r.json()


def raw(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    shape = tuple(int(v) for v in response.headers["x-shape"].split(","))
    dtype = {"rgb8": np.uint8}.get(response.headers["x-dtype"], response.headers["x-dtype"])
    return np.frombuffer(response.content, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def one_line_error(r, status: int, needle: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    assert needle in detail, detail


# --------------------------------------------------------------------------- opening


def test_upload_png_info_slices_and_page(client):
    img = blobs()
    info = upload(client, png_bytes(img), name="../../etc/blobs.png")
    assert info["name"] == "blobs.png"  # only shown, never a path
    assert (info["format"], info["ndim"], info["shape"], info["dtype"]) == (
        "png",
        2,
        [64, 64],
        "uint8",
    )
    assert info["min"] == img.min() and info["max"] == img.max() and info["unit"] == "px"
    sid = info["id"]
    np.testing.assert_array_equal(raw(client.get(f"/api/sessions/{sid}/slice")), img)
    mask = client.get(f"/api/sessions/{sid}/mask/slice")
    assert raw(mask).sum() == 0 and mask.headers["x-mask-version"] == "0"
    assert client.get(f"/api/sessions/{sid}").json()["id"] == sid
    # the page and its assets are served, and name nothing outside the server
    page = client.get("/")
    assert page.status_code == 200 and 'type="module"' in page.text
    static = Path(__file__).resolve().parents[1] / "src" / "segloc" / "serve" / "static"
    for asset in static.iterdir():
        r = client.get(f"/static/{asset.name}")
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text, asset.name
    assert client.get("/api/reference").status_code == 200


def test_volume_slices_on_every_axis_and_affine_kept(client):
    vol = volume()
    info = upload(client, nifti_bytes(vol, AFFINE), name="v.nii.gz")
    assert info["format"] == "nifti" and info["shape"] == [20, 24, 16] and info["unit"] == "mm"
    np.testing.assert_allclose(info["spacing"], [0.8, 0.9, 2.0])
    sid = info["id"]
    for axis, index in [(0, 3), (1, 23), (2, 0), (2, 15)]:
        r = client.get(f"/api/sessions/{sid}/slice?axis={axis}&index={index}")
        np.testing.assert_array_equal(raw(r), np.take(vol, index, axis=axis))
        assert r.headers["x-dtype"] == "float32"
    one_line_error(client.get(f"/api/sessions/{sid}/slice?axis=2&index=16"), 400, "0..15")
    one_line_error(client.get(f"/api/sessions/{sid}/slice?axis=3&index=0"), 422, "axis")
    r = client.post(
        f"/api/sessions/{sid}/segment",
        json={"method": "region-grow", "seeds": [{"index": [10, 12, 8]}], "tolerance": 100},
    )
    assert r.status_code == 200, r.text
    want = region_grow(vol, [(10, 12, 8)], tolerance=100)
    r = client.get(f"/api/sessions/{sid}/download/mask")
    assert 'filename="v_mask.nii.gz"' in r.headers["content-disposition"]
    path = Path(client.app.state.store.root) / "check.nii.gz"
    path.write_bytes(r.content)
    mask, meta = io.read_mask(path)
    np.testing.assert_array_equal(mask, want > 0)
    np.testing.assert_allclose(meta.affine, AFFINE)


@pytest.mark.parametrize("fmt", ["tif", "nrrd", "jpg", "nii"])
def test_other_formats_told_from_the_bytes(client, tmp_path, fmt):
    img = blobs()
    path = tmp_path / f"a.{fmt}"
    if fmt == "nrrd":
        io.write_image(path, volume(), meta=io.ImageMeta(affine=AFFINE))
    else:
        io.write_image(path, img)
    # a misleading name: the bytes decide
    info = upload(client, path.read_bytes(), name="misleading.png")
    want = {"tif": "tiff", "nrrd": "nrrd", "jpg": "jpeg", "nii": "nifti"}[fmt]
    assert info["format"] == want


def test_zipped_dicom_series_with_hostile_member_names(client, tmp_path):
    from test_io import _build_series  # the DICOM writer the io tests use

    series = tmp_path / "series"
    _build_series(series, [1, 0, 0, 0, 1, 0])
    buf = bytesio.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, f in enumerate(sorted(series.iterdir())):
            z.write(f, f"../../../escape_{k}.dcm")  # must not be used as a path
    info = upload(client, buf.getvalue(), name="series.zip")
    assert info["format"] == "dicom" and info["shape"] == [5, 6, 4]
    root = Path(client.app.state.store.root)
    assert not list(root.parent.glob("escape_*")) and not list(root.glob("escape_*"))
    want, _ = io.read_image(series)
    sid = info["id"]
    np.testing.assert_array_equal(
        raw(client.get(f"/api/sessions/{sid}/slice?axis=2&index=1")), want[..., 1]
    )


def test_data_listing_and_opening_by_name_only(client, data_dir):
    files = client.get("/api/data").json()["files"]
    assert [f["name"] for f in files] == ["blobs.png", "sub/vol.nii.gz"]  # hidden, .txt left out
    info = client.post("/api/sessions/open", json={"name": "sub/vol.nii.gz"}).json()
    assert info["shape"] == [20, 24, 16]
    assert (data_dir / "sub" / "vol.nii.gz").exists()  # a data file is linked, never moved
    for name in [
        "../data/blobs.png",
        "/etc/passwd",
        "sub/../blobs.png",
        "notes.txt",
        ".hidden/secret.png",
    ]:
        one_line_error(client.post("/api/sessions/open", json={"name": name}), 404, "no file")


# --------------------------------------------------------------------------- refusals


def png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def nifti_header(shape, *, gz: bool) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    hdr["magic"] = b"n+1"
    raw_bytes = hdr.binaryblock + b"\0" * 4 + b"\0" * 1024  # header, no extension, a little data
    return gzip.compress(raw_bytes) if gz else raw_bytes


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = bytesio.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


NRRD_HEAD = b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 10 10\n"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"hello, not an image at all" * 20, 415, "unknown file format"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 200, 400, "corrupt image"),
        (png_bytes(blobs())[:300], 400, "cannot read"),  # truncated
        (png_header(100_000, 100_000), 413, "too large"),  # Pillow's bomb guard
        (png_header(3000, 3000), 413, "over the limit"),  # our voxel limit (2**22 here)
        (nifti_header((2000, 2000, 2000), gz=True), 413, "over the limit"),
        (nifti_header((2000, 2000, 2000), gz=False), 413, "over the limit"),
        (nifti_header((4, 4, 4, 3), gz=True), 400, "2D or 3D"),
        (nifti_header((64, 64, 64), gz=True), 400, "cannot read"),  # data missing
        (NRRD_HEAD + b"encoding: gzip\n\n" + gzip.compress(b"\0" * (40 * MiB)), 413, "bomb"),
        (NRRD_HEAD + b"data file: /etc/passwd\nencoding: raw\n\n", 400, "detached"),
        (NRRD_HEAD + b"encoding: raw\n\n" + b"\0" * 10, 400, "cannot read"),
        (zip_of({f"{k}.dcm": b"x" for k in range(40)}), 413, "over the limit of 32"),
        (zip_of({"big.dcm": b"\0" * (9 * MiB)}), 413, "unpacks to"),
        (zip_of({"notes.txt": b"hello"}), 400, "no DICOM"),
        (b"PK\x03\x04" + b"\0" * 100, 400, "corrupt zip"),
        (b"", 400, "empty"),
    ],
    ids=[
        "unknown", "corrupt-png", "truncated-png", "pillow-bomb", "voxel-limit", "nifti-gz-bomb",
        "nifti-bomb", "nifti-4d", "nifti-truncated", "nrrd-gzip-bomb", "nrrd-detached",
        "nrrd-short", "zip-members", "zip-unpacked", "zip-no-dicom", "zip-corrupt", "empty",
    ],
)  # fmt: skip
def test_bad_uploads_get_one_line_and_the_server_goes_on(data_dir, body, status, needle):
    limits = Limits(
        max_upload_bytes=8 * MiB, max_voxels=1 << 22, max_unpacked_bytes=8 * MiB, max_zip_members=32
    )
    app = create_app(data=data_dir, limits=limits)
    with client_for(app) as client:
        one_line_error(client.post("/api/sessions?name=bad", content=body), status, needle)
        assert list(Path(app.state.store.root).iterdir()) == []  # nothing left behind
        assert client.get("/api/health").json()["sessions"] == 0
        upload(client, png_bytes(blobs()))  # and the next request works


def test_body_limits_stated_and_chunked(data_dir):
    app = create_app(data=data_dir, limits=Limits(max_upload_bytes=64 * 1024, max_json_bytes=1024))
    with client_for(app) as client:
        big = os.urandom(100 * 1024)
        one_line_error(client.post("/api/sessions", content=big), 413, "over the limit")

        def chunks():
            for _ in range(10):
                yield os.urandom(16 * 1024)

        one_line_error(client.post("/api/sessions", content=chunks()), 413, "over the limit")
        sid = upload(client, png_bytes(blobs()))["id"]
        body = json.dumps({"method": "region-grow", "seeds": [{"index": [1, 1]}] * 200})
        r = client.post(
            f"/api/sessions/{sid}/segment",
            content=body,
            headers={"content-type": "application/json"},
        )
        one_line_error(r, 413, "request body is over the limit of")
        assert list(Path(app.state.store.root).iterdir()) == [Path(app.state.store.root) / sid]


def test_unknown_sessions_and_traversal_in_ids(client):
    for method, url in [
        ("get", "/api/sessions/nope"),
        ("get", "/api/sessions/nope/slice"),
        ("get", "/api/sessions/..%2E%2E/mask/slice"),
        ("get", "/api/sessions/etc%5Cpasswd/regions"),
        ("post", "/api/sessions/nope/undo"),
        ("delete", "/api/sessions/nope"),
        ("get", "/api/sessions/nope/download/mask"),
    ]:
        one_line_error(getattr(client, method)(url), 404, "unknown or expired session")
    # an id with slashes matches no route at all
    for url in [
        "/api/sessions/%2E%2E%2F%2E%2E%2Fetc/mask/slice",
        "/api/sessions/%2Fetc%2Fpasswd/regions",
        "/api/sessions/../../etc/passwd",
    ]:
        assert client.get(url).status_code == 404
    one_line_error(client.get("/api/jobs/nope"), 404, "unknown")


# --------------------------------------------------------------------------- segmentation


@pytest.fixture
def blob_session(client):
    return upload(client, png_bytes(blobs()))["id"]


def mask_of(client, sid) -> np.ndarray:
    return raw(client.get(f"/api/sessions/{sid}/mask/slice"))


def test_methods_give_what_the_library_gives(client, blob_session):
    img, sid = blobs(), blob_session
    t = client.get(f"/api/sessions/{sid}/thresholds?classes=3").json()
    assert t["otsu"] == threshold_otsu(img)
    assert t["multiotsu"] == threshold_multiotsu(img, classes=3).tolist()
    cases = [
        ({"method": "threshold", "value": 120}, segment(img, "fixed", value=120)),
        ({"method": "otsu"}, segment(img, "otsu")),
        ({"method": "multiotsu", "classes": 3}, segment(img, "multiotsu", classes=3)),
        ({"method": "kmeans", "k": 3}, segment(img, "kmeans", k=3)),
    ]
    for body, want in cases:
        r = client.post(f"/api/sessions/{sid}/segment", json=body)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(mask_of(client, sid), want.astype(np.uint8))
    seeds = [
        {"index": [16, 16], "label": 1},
        {"index": [40, 44], "label": 7},
        {"index": [2, 2], "label": 3},
    ]
    info = client.post(
        f"/api/sessions/{sid}/segment",
        json={"method": "region-grow", "seeds": seeds, "tolerance": 30, "connectivity": 1},
    ).json()
    grown = region_grow(img, [(16, 16), (40, 44), (2, 2)], tolerance=30)
    want = np.array([0, 1, 7, 3], np.uint8)[grown]  # seed i's region gets the seed's label
    np.testing.assert_array_equal(mask_of(client, sid), want)
    assert info["labels"] == {str(k): int((want == k).sum()) for k in (1, 3, 7)}
    # multi-Otsu and 3-means agree on these blobs: an unchanged mask makes no new version
    assert info["version"] == info["undo"] == 4


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"method": "region-grow", "seeds": []}, 400, "needs at least one seed"),
        ({"method": "region-grow", "seeds": [{"index": [64, 0]}]}, 400, "outside the image"),
        ({"method": "region-grow", "seeds": [{"index": [1, 2, 3]}]}, 400, "must have 2 values"),
        ({"method": "region-grow", "seeds": [{"index": [1]}]}, 422, "seeds.0.index"),
        (
            {"method": "region-grow", "seeds": [{"index": [1, 1]}, {"index": [1, 1]}]},
            400,
            "repeats",
        ),
        ({"method": "region-grow", "seeds": [{"index": [1, 1], "label": 0}]}, 422, "label"),
        (
            {"method": "region-grow", "seeds": [{"index": [1, 1]}], "tolerance": -1},
            422,
            "tolerance",
        ),
        (
            {"method": "region-grow", "seeds": [{"index": [1, 1]}], "connectivity": 3},
            400,
            "connectivity",
        ),
        ({"method": "threshold"}, 400, "needs a value"),
        ({"method": "kmeans", "k": 1}, 422, "k"),
        ({"method": "watershed"}, 422, "method"),
        ({"method": "multiotsu", "classes": 9}, 422, "classes"),
    ],
)
def test_bad_segment_requests(client, blob_session, body, status, needle):
    one_line_error(client.post(f"/api/sessions/{blob_session}/segment", json=body), status, needle)
    assert client.get(f"/api/sessions/{blob_session}").json()["mask"]["version"] == 0


def test_not_json_and_wrong_types(client, blob_session):
    url = f"/api/sessions/{blob_session}/segment"
    r = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    one_line_error(r, 422, "JSON")
    one_line_error(client.post(url, json={"method": "otsu", "k": "many"}), 422, "k")


# --------------------------------------------------------------------------- corrections


def test_stroke_undo_redo_clear(client, blob_session):
    sid = blob_session
    points = [[5.0, 5.0], [5.0, 30.0], [20.5, 30.0]]
    info = client.post(
        f"/api/sessions/{sid}/strokes", json={"points": points, "radius": 2.5, "label": 4}
    ).json()
    want = stroke_pixels((64, 64), points, 2.5).astype(np.uint8) * 4
    np.testing.assert_array_equal(mask_of(client, sid), want)
    assert info["labels"] == {"4": int(want.astype(bool).sum())}
    # a hand-computed case of the brush itself: a dot of radius 1 is a plus sign
    dot = stroke_pixels((3, 3), [(1, 1)], 1.0).astype(int)
    np.testing.assert_array_equal(dot, [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    erase = client.post(
        f"/api/sessions/{sid}/strokes", json={"points": [[5, 10]], "radius": 3, "label": 0}
    ).json()
    assert erase["labels"]["4"] < info["labels"]["4"]
    assert client.post(f"/api/sessions/{sid}/undo").json()["labels"] == info["labels"]
    np.testing.assert_array_equal(mask_of(client, sid), want)
    client.post(f"/api/sessions/{sid}/undo")
    assert mask_of(client, sid).sum() == 0
    one_line_error(client.post(f"/api/sessions/{sid}/undo"), 409, "nothing to undo")
    client.post(f"/api/sessions/{sid}/redo")
    np.testing.assert_array_equal(mask_of(client, sid), want)
    assert client.post(f"/api/sessions/{sid}/clear").json()["labels"] == {}
    one_line_error(client.post(f"/api/sessions/{sid}/redo"), 409, "nothing to redo")
    bad = {"points": [[1, 1]], "axis": 2, "index": 1}
    one_line_error(client.post(f"/api/sessions/{sid}/strokes", json=bad), 400, "one slice")
    one_line_error(client.post(f"/api/sessions/{sid}/strokes", json={"points": []}), 422, "points")
    one_line_error(
        client.post(f"/api/sessions/{sid}/strokes", json={"points": [[1, 1]], "radius": 0}),
        422,
        "radius",
    )


def test_stroke_and_fill_on_a_volume_slice(client):
    vol = volume()
    sid = upload(client, nifti_bytes(vol, AFFINE))["id"]
    ring = {"axis": 0, "index": 7, "radius": 1.0, "label": 2}
    circle = [[8 + 5 * np.cos(a), 8 + 5 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 60)]
    client.post(f"/api/sessions/{sid}/strokes", json={**ring, "points": circle})
    plane = raw(client.get(f"/api/sessions/{sid}/mask/slice?axis=0&index=7"))
    np.testing.assert_array_equal(plane, stroke_pixels((24, 16), circle, 1.0) * 2)
    assert raw(client.get(f"/api/sessions/{sid}/mask/slice?axis=0&index=6")).sum() == 0
    info = client.post(
        f"/api/sessions/{sid}/fill", json={"axis": 0, "index": 7, "point": [8, 8]}
    ).json()
    filled = raw(client.get(f"/api/sessions/{sid}/mask/slice?axis=0&index=7"))
    np.testing.assert_array_equal(filled, fill_holes(plane > 0) * 2)
    assert info["labels"] == {"2": int(filled.astype(bool).sum())}
    r = client.post(f"/api/sessions/{sid}/fill", json={"axis": 0, "index": 7, "point": [0, 0]})
    one_line_error(r, 400, "not inside a hole")
    r = client.post(f"/api/sessions/{sid}/fill", json={"axis": 0, "index": 7, "point": [8, 8]})
    one_line_error(r, 400, "labelled 2")
    r = client.post(f"/api/sessions/{sid}/fill", json={"axis": 0, "index": 7, "point": [99, 0]})
    one_line_error(r, 400, "outside the slice")
    client.post(f"/api/sessions/{sid}/undo")
    np.testing.assert_array_equal(
        raw(client.get(f"/api/sessions/{sid}/mask/slice?axis=0&index=7")), plane
    )


# --------------------------------------------------------------------------- objects, scores


def test_region_table_against_regionprops(client, blob_session):
    img, sid = blobs(), blob_session
    client.post(f"/api/sessions/{sid}/segment", json={"method": "kmeans", "k": 3})
    labels = segment(img, "kmeans", k=3)
    table = client.get(f"/api/sessions/{sid}/regions").json()
    want = []
    for c in (1, 2):
        for p in regionprops(sk_label(labels == c, connectivity=1), intensity_image=img):
            r0, c0, r1, c1 = p.bbox
            want.append((c, int(p.area), (c0, r0, c1, r1), round(float(p.intensity_mean), 6)))
    got = [
        (r["class"], r["pixels"], tuple(r["box"]), round(r["mean"], 6)) for r in table["regions"]
    ]
    assert sorted(got) == sorted(want) and table["total"] == len(want)
    assert [r["pixels"] for r in table["regions"]] == sorted(
        (r["pixels"] for r in table["regions"]), reverse=True
    )
    assert table["size_unit"] == "px²"
    first = table["regions"][0]
    piece = raw(client.get(f"/api/sessions/{sid}/regions/{first['id']}/slice"))
    assert piece.sum() == first["pixels"]
    one_line_error(client.get(f"/api/sessions/{sid}/regions/999/slice"), 404, "no object 999")


def test_region_sizes_in_physical_units(client):
    sid = upload(client, nifti_bytes(volume(), AFFINE))["id"]
    client.post(f"/api/sessions/{sid}/segment", json={"method": "otsu"})
    table = client.get(f"/api/sessions/{sid}/regions").json()
    assert table["size_unit"] == "mm³"
    for row in table["regions"]:
        assert row["size"] == pytest.approx(row["pixels"] * 0.8 * 0.9 * 2.0)
        assert len(row["box"]) == 6


def test_scores_panel_and_truth_errors(client, blob_session, data_dir):
    sid = blob_session
    one_line_error(client.get(f"/api/sessions/{sid}/scores"), 409, "no ground truth")
    one_line_error(client.get(f"/api/sessions/{sid}/panel"), 409, "no ground truth")
    client.post(
        f"/api/sessions/{sid}/segment",
        json={
            "method": "region-grow",
            "seeds": [{"index": [16, 16]}, {"index": [40, 44], "label": 2}],
            "tolerance": 40,
        },
    )
    pred = mask_of(client, sid)
    truth = np.zeros((64, 64), np.uint8)
    truth[10:24, 10:24] = 1
    truth[30:52, 34:56] = 2
    scores = client.post(f"/api/sessions/{sid}/truth", content=png_bytes(truth)).json()
    overlap = metrics.overlap_scores(pred, truth, num_classes=3)
    for row in scores["classes"]:
        c = row["class"]
        assert row["dice"] == pytest.approx(overlap["dice"][c - 1])
        assert row["iou"] == pytest.approx(overlap["iou"][c - 1])
        assert row["hd95"] == pytest.approx(metrics.hd95(pred == c, truth == c))
    assert scores["mean_dice"] == pytest.approx(np.mean(overlap["dice"]))
    assert client.get(f"/api/sessions/{sid}/scores").json() == scores
    panel = client.get(f"/api/sessions/{sid}/panel")
    assert panel.status_code == 200 and panel.content.startswith(b"\x89PNG")
    assert Image.open(bytesio.BytesIO(panel.content)).size[0] > 600
    one_line_error(
        client.post(f"/api/sessions/{sid}/truth", content=png_bytes(truth[:10])), 400, "shape"
    )
    one_line_error(
        client.post(f"/api/sessions/{sid}/truth", content=b"garbage" * 60), 415, "unknown"
    )
    r = client.post(f"/api/sessions/{sid}/truth/open", json={"name": "blobs.png"})
    assert r.status_code == 200  # any listed file can serve as truth (here: labels 0..255)
    one_line_error(
        client.post(f"/api/sessions/{sid}/truth/open", json={"name": "../x"}), 404, "no file"
    )
    assert not list(Path(client.app.state.store.root, sid).iterdir())  # no upload left behind


def test_downloads_mask_boxes_coco(client, blob_session):
    img, sid = blobs(), blob_session
    client.post(f"/api/sessions/{sid}/segment", json={"method": "otsu"})
    want = segment(img, "otsu")
    r = client.get(f"/api/sessions/{sid}/download/mask")
    assert (
        r.content.startswith(b"\x89PNG")
        and 'filename="x_mask.png"' in r.headers["content-disposition"]
    )
    assert np.array_equal(np.asarray(Image.open(bytesio.BytesIO(r.content))), want * np.uint8(255))
    r = client.get(f"/api/sessions/{sid}/download/mask?format=tif")
    assert r.content[:4] == b"II*\x00"
    one_line_error(client.get(f"/api/sessions/{sid}/download/mask?format=exe"), 422, "format")
    doc = client.get(f"/api/sessions/{sid}/download/boxes").json()
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    objects = mask_to_boxes(want)
    assert len(coco.getAnnIds()) == len(objects) == 3
    got = sorted(tuple(a["bbox"]) for a in coco.loadAnns(coco.getAnnIds()))
    assert got == sorted(tuple(box_to_coco(o["box"])) for o in objects)
    assert [c["id"] for c in doc["categories"]] == [1]


def test_boxes_of_a_volume_and_mask_formats(client):
    sid = upload(client, nifti_bytes(volume(), AFFINE))["id"]
    client.post(f"/api/sessions/{sid}/segment", json={"method": "otsu"})
    doc = client.get(f"/api/sessions/{sid}/download/boxes").json()
    assert doc["box_format"] == "xyzxyz" and len(doc["objects"][0]["box"]) == 6
    one_line_error(client.get(f"/api/sessions/{sid}/download/mask?format=png"), 400, "PNG holds 2D")
    assert client.get(f"/api/sessions/{sid}/download/mask?format=nrrd").content.startswith(b"NRRD")


# --------------------------------------------------------------------------- models


def test_models_listing_and_prediction_job(client, blob_session, runs_dir):
    listing = client.get("/api/models").json()["models"]
    assert {m["name"]: m["dims"] for m in listing} == {"tiny2d": 2, "tiny3d": 3}
    sid = blob_session
    one_line_error(
        client.post(f"/api/sessions/{sid}/predict", json={"model": "tiny3d"}),
        400,
        "3D, the image is 2D",
    )
    for name in ["nope", "../runs/tiny2d", "tiny2d/best.safetensors/.."]:
        one_line_error(
            client.post(f"/api/sessions/{sid}/predict", json={"model": name}), 404, "unknown model"
        )
    job = client.post(f"/api/sessions/{sid}/predict", json={"model": "tiny2d"})
    assert job.status_code == 202, job.text
    jid = job.json()["id"]
    for _ in range(200):
        state = client.get(f"/api/jobs/{jid}").json()
        if state["state"] in ("done", "error"):
            break
        time.sleep(0.05)
    assert state["state"] == "done", state
    assert state["progress"] == 1.0
    predictor = Predictor(runs_dir / "tiny2d")
    want = predictor.labels(predictor.predict(blobs(), spacing=(1.0, 1.0))).astype(np.uint8)
    np.testing.assert_array_equal(mask_of(client, sid), want)
    assert state["mask"]["version"] == int(want.any())  # an untrained net may find nothing


# --------------------------------------------------------------------------- sessions


def test_sessions_expire_and_their_files_go(data_dir):
    clock = Clock()
    app = create_app(data=data_dir, limits=Limits(session_ttl=60), clock=clock)
    with client_for(app) as client:
        sid = upload(client, png_bytes(blobs()))["id"]
        folder = Path(app.state.store.root) / sid
        assert folder.is_dir()
        clock.now += 59
        assert client.get(f"/api/sessions/{sid}").status_code == 200  # used: the clock restarts
        clock.now += 59
        assert client.get(f"/api/sessions/{sid}/mask/slice").status_code == 200
        clock.now += 61
        one_line_error(client.get(f"/api/sessions/{sid}"), 404, "expired")
        assert not folder.exists()
    assert not Path(app.state.store.root).exists()  # the root goes at shutdown


def test_least_recently_used_sessions_are_evicted_first(data_dir):
    per_session = 64 * 64 * 2  # uint8 image + uint8 mask
    app = create_app(data=data_dir, limits=Limits(max_total_bytes=int(2.5 * per_session)))
    with client_for(app) as client:
        a = upload(client, png_bytes(blobs()))["id"]
        b = upload(client, png_bytes(blobs(seed=1)))["id"]
        client.get(f"/api/sessions/{a}")  # a is now more recent than b
        c = upload(client, png_bytes(blobs(seed=2)))["id"]
        assert client.get(f"/api/sessions/{b}").status_code == 404
        assert not (Path(app.state.store.root) / b).exists()
        assert client.get(f"/api/sessions/{a}").status_code == 200
        assert client.get(f"/api/sessions/{c}").status_code == 200
        assert app.state.store.total_bytes <= int(2.5 * per_session)


def test_session_memory_is_bounded(data_dir):
    app = create_app(data=data_dir, limits=Limits(max_session_bytes=5000))
    with client_for(app) as client:
        one_line_error(client.post("/api/sessions", content=png_bytes(blobs())), 413, "per-session")
        assert list(Path(app.state.store.root).iterdir()) == []
    limit = 64 * 64 * 2 + 3 * 2 * 64 * 64  # room for the pixels and about three full undo steps
    app = create_app(data=data_dir, limits=Limits(max_session_bytes=limit))
    with client_for(app) as client:
        sid = upload(client, png_bytes(blobs()))["id"]
        for value in [10, 250] * 5:  # each step changes every pixel
            client.post(
                f"/api/sessions/{sid}/segment", json={"method": "threshold", "value": value}
            )
        info = client.get(f"/api/sessions/{sid}").json()["mask"]
        assert info["version"] == 10 and 1 <= info["undo"] <= 3
        assert app.state.store.total_bytes <= limit


def test_a_crash_inside_a_request_does_not_stop_the_server(client, blob_session, monkeypatch):
    import segloc.serve.api_edit as edit_routes

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(edit_routes, "classical_segment", boom)
    r = client.post(f"/api/sessions/{blob_session}/segment", json={"method": "otsu"})
    one_line_error(r, 500, "internal error (RuntimeError: boom)")
    monkeypatch.undo()
    assert client.get("/api/health").json()["status"] == "ok"
    r = client.post(f"/api/sessions/{blob_session}/segment", json={"method": "otsu"})
    assert r.status_code == 200
    assert client.app.state.pool.pending == 0


def test_work_pool_queues_then_refuses():
    pool = WorkPool(workers=1, max_queue=1)
    gate = threading.Event()
    try:
        first = pool.submit(gate.wait)
        second = pool.submit(lambda: 2)
        with pytest.raises(Busy, match="server busy"):
            pool.submit(lambda: 3)
        gate.set()
        assert first.result(5) and second.result(5) == 2
        assert pool.pending == 0
        assert pool.submit(lambda: 4).result(5) == 4
    finally:
        gate.set()
        pool.shutdown()


def test_delete_session_and_health(client, blob_session):
    assert client.get("/api/health").json()["sessions"] == 1
    assert client.delete(f"/api/sessions/{blob_session}").status_code == 204
    assert client.get("/api/health").json() == {
        "status": "ok", "sessions": 0, "session_bytes": 0, "pending": 0,
    }  # fmt: skip


def test_openapi_documents_every_route(client):
    doc = client.get("/openapi.json").json()
    routes = {(verb, path) for path, ops in doc["paths"].items() for verb in ops}
    assert len(routes) == 26
    for path, ops in doc["paths"].items():
        for verb, op in ops.items():
            assert op.get("summary"), (verb, path)
    assert (
        "application/octet-stream"
        in doc["paths"]["/api/sessions"]["post"]["requestBody"]["content"]
    )


def test_sniff_table():
    assert sniff(b"\x89PNG\r\n\x1a\n") == "png"
    assert sniff(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff(b"II*\x00") == sniff(b"MM\x00*") == "tiff"
    assert sniff(b"NRRD0004\n") == "nrrd"
    assert sniff(b"\0" * 128 + b"DICM") == "dicom"
    assert sniff(b"\0" * 344 + b"n+1\x00") == "nifti"
    assert sniff(b"\x1f\x8b", b"\0" * 344 + b"n+1\x00") == "nifti-gz"
    assert sniff(b"\x1f\x8b", b"plain gzip") is None
    assert sniff(b"GIF89a") is None


# --------------------------------------------------------------------------- command line


def test_cli_serve_refuses_a_remote_host_without_the_flag(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "add --allow-remote" in err and len(err.strip().splitlines()) == 1


def test_cli_serve_without_the_extra(monkeypatch, capsys):
    import sys

    for name in [m for m in sys.modules if m == "segloc.serve" or m.startswith("segloc.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    assert main(["serve"]) == 2
    assert "pip install segloc[serve]" in capsys.readouterr().err


def test_cli_serve_bad_folder(capsys, tmp_path):
    assert main(["serve", "--data", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.slow
def test_real_isbi_slice_region_growing_and_scores(client):
    image = DATA / "isbi2012" / "images" / "1.png"
    if not image.exists():
        pytest.skip(f"{image} not found (set SEGLOC_DATA)")
    sid = upload(client, image.read_bytes(), name="1.png")["id"]
    seeds = [(1, 511), (149, 0)]
    r = client.post(
        f"/api/sessions/{sid}/segment",
        json={
            "method": "region-grow",
            "seeds": [{"index": list(s)} for s in seeds],
            "tolerance": 80,
        },
    )
    assert r.status_code == 200
    img, _ = io.read_image(image)
    want = region_grow(img, seeds, tolerance=80) > 0
    np.testing.assert_array_equal(mask_of(client, sid) > 0, want)
    scores = client.post(
        f"/api/sessions/{sid}/truth", content=(DATA / "isbi2012" / "labels" / "1.png").read_bytes()
    ).json()
    truth, _ = io.read_mask(DATA / "isbi2012" / "labels" / "1.png")
    assert scores["classes"][0]["dice"] == pytest.approx(metrics.dice(want, truth))
