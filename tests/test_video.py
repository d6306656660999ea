"""Videos: frames read in order with stride and limits, Grad-CAM's per-frame map follows a moving
bright square, the overlay video and arrays written, smoothing's formula, typed errors, the CLI.

The clip is made here with PyAV: a 5x5 bright square crossing a dark 64x48 background diagonally
in 20 frames at 10 fps, encoded losslessly. The model's class 0 score is the mean of a blurred
brightness map (a 3x3 convolution, ReLU, global average pooling, a linear head set by hand), so
its Grad-CAM map is that brightness map itself (up to a positive factor) and peaks on the square.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

av = pytest.importorskip("av")

from seethrough.errors import (  # noqa: E402
    CancelledError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    MissingDependencyError,
)
from seethrough.video import (  # noqa: E402
    explain_video,
    frames,
    is_video,
    smooth_maps,
    video_info,
    video_items,
    write_video,
)
from seethrough.viz import overlay  # noqa: E402

N, W, H, FPS = 20, 64, 48, 10
DARK, BRIGHT = 20, 230
BLUR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def centres() -> list[tuple[int, int]]:
    """The square's centre ``(row, column)`` in each frame: corner to corner."""
    return [(2 + i * (H - 5) // (N - 1) + 0, 2 + i * (W - 5) // (N - 1)) for i in range(N)]


def square_frame(i: int) -> np.ndarray:
    image = np.full((H, W, 3), DARK, np.uint8)
    r, c = centres()[i]
    image[r - 2 : r + 3, c - 2 : c + 3] = BRIGHT
    return image


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The moving-square clip, H.264 lossless (MPEG-4 at its finest quantiser without x264)."""
    path = tmp_path_factory.mktemp("clip") / "square.mp4"
    container = av.open(str(path), "w")
    if "libx264" in av.codecs_available:
        stream = container.add_stream("libx264", rate=FPS, options={"qp": "0"})
    else:  # pragma: no cover - every PyPI wheel has x264
        stream = container.add_stream("mpeg4", rate=FPS, options={"qscale": "1"})
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    for i in range(N):
        for packet in stream.encode(av.VideoFrame.from_ndarray(square_frame(i), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def bright_model() -> nn.Module:
    """Class 0 = mean blurred brightness, class 1 = its negative minus one."""
    conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    head = nn.Linear(1, 2)
    with torch.no_grad():
        conv.weight[:] = BLUR / 3
        head.weight[:] = torch.tensor([[1.0], [-1.0]])
        head.bias[:] = torch.tensor([0.0, -1.0])
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def brightness(image: np.ndarray) -> np.ndarray:
    """What Grad-CAM of class 0 must give (up to a positive factor): the blurred brightness."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255
    kernel = (BLUR / 3).double().expand(1, 3, 3, 3)
    return torch.relu(torch.nn.functional.conv2d(x, kernel, padding=1))[0, 0].numpy()


def decoded(path: Path) -> list[np.ndarray]:
    return [f.image for f in frames(path)]


# reading


def test_frames_in_order_with_times(clip):
    info = video_info(clip)
    assert (info.width, info.height, info.fps, info.frames) == (W, H, FPS, N)
    got = list(frames(clip))
    assert [f.index for f in got] == list(range(N))
    assert np.allclose([f.time for f in got], np.arange(N) / FPS)
    for i, f in enumerate(got):  # lossless: the very pixels written
        assert f.image.dtype == np.uint8 and f.image.shape == (H, W, 3)
        assert np.abs(f.image.astype(int) - square_frame(i)).max() <= 2


def test_stride_and_max_frames_keep_the_right_frames(clip):
    assert [f.index for f in frames(clip, stride=3)] == [0, 3, 6, 9, 12, 15, 18]
    assert [f.index for f in frames(clip, stride=3, max_frames=4)] == [0, 3, 6, 9]
    kept = list(frames(clip, stride=7))
    assert np.allclose([f.time for f in kept], [0.0, 0.7, 1.4])
    with frames(clip) as stream:  # closed early: the file is closed, no frame is left
        assert stream.info.frames == N and next(stream).index == 0
    assert next(stream, None) is None
    items = video_items(clip, stride=5)
    assert [name for name, _ in items] == [f"square.mp4#frame={i:06d}" for i in (0, 5, 10, 15)]
    for (_, image), i in zip(items, (0, 5, 10, 15), strict=True):
        assert np.abs(image.astype(int) - square_frame(i)).max() <= 2


def test_suffixes():
    assert is_video("a/clip.MP4") and is_video("x.webm") and is_video("y.mkv")
    assert not is_video("photo.png") and not is_video("clip")


# explaining


def test_gradcam_peak_follows_the_square_in_every_frame(clip, tmp_path):
    model = bright_model().train()  # the mode is restored after
    v = explain_video(model, clip, "gradcam", layer="1", out=tmp_path, frame_batch=6)
    assert model.training
    assert len(v) == N and v.maps.shape == (N, H, W)
    assert (v.targets == 0).all() and v.labels == [None] * N
    # the peak is on the square's centre (within 1 pixel) in every frame
    assert np.abs(v.peaks() - np.array(centres())).max() <= 1
    # and each map is the model's blurred brightness of that frame, up to a positive factor
    for m, image in zip(v.maps, decoded(clip), strict=True):
        expected = brightness(image)
        assert np.allclose(m / m.max(), expected / expected.max(), atol=1e-5)
    # several frames per call give the frames' maps one by one
    single = explain_video(model, clip, "gradcam", layer="1", frame_batch=1, max_frames=5)
    assert np.allclose(single.maps, v.maps[:5], atol=1e-6)


def test_overlay_video_and_arrays_written(clip, tmp_path):
    model = bright_model()
    v = explain_video(model, clip, "gradcam", layer="1", out=tmp_path, stem="run")
    assert {p.name for p in tmp_path.iterdir()} == {"run.mp4", "run.npz", "run.json"}
    info = video_info(tmp_path / "run.mp4")
    assert (info.width, info.height, info.fps) == (W, H, FPS)
    shown = decoded(tmp_path / "run.mp4")
    assert len(shown) == N
    for image, m, got in zip(decoded(clip), v.smoothed, shown, strict=True):
        want = overlay(image, m).astype(int)
        assert np.abs(got.astype(int) - want).mean() < 6  # lossy H.264
    with np.load(tmp_path / "run.npz") as arrays:
        assert np.array_equal(arrays["maps"], v.maps)
        assert np.array_equal(arrays["indices"], np.arange(N))
        assert np.allclose(arrays["times"], np.arange(N) / FPS)
        assert np.array_equal(arrays["targets"], np.zeros(N))
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert manifest["format"] == "seethrough.video" and manifest["version"] == 1
    assert manifest["frames"] == N and manifest["method"] == "gradcam"
    assert manifest["files"] == {"video": "run.mp4", "arrays": "run.npz", "manifest": "run.json"}
    assert "av" in manifest["libraries"]


def test_stride_gives_a_shorter_video_of_the_same_length(clip, tmp_path):
    v = explain_video(bright_model(), clip, "gradcam", layer="1", stride=2, out=tmp_path)
    assert list(v.indices) == list(range(0, N, 2))
    info = video_info(v.files["video"])
    assert info.fps == FPS / 2 and len(decoded(v.files["video"])) == N // 2
    assert np.abs(v.peaks() - np.array(centres()[::2])).max() <= 1


def test_a_fixed_class_in_every_frame(clip):
    # class 1 = minus the brightness: its Grad-CAM weights are negative, the map is all zero
    v = explain_video(bright_model(), clip, "gradcam", 1, layer="1", max_frames=4)
    assert (v.targets == 1).all()
    assert np.allclose(v.maps, 0.0)


def test_smoothing_formula_on_known_maps():
    maps = np.stack([np.full((2, 3), v) for v in (0.0, 1.0, 1.0, 1.0, 4.0)])
    got = smooth_maps(maps, 0.5)
    # s0 = m0; s_t = 0.5 s_{t-1} + 0.5 m_t
    assert np.allclose(got[:, 0, 0], [0.0, 0.5, 0.75, 0.875, 2.4375])
    assert np.array_equal(smooth_maps(maps, 0.0), maps)
    constant = np.ones((4, 2, 2)) * 3
    assert np.allclose(smooth_maps(constant, 0.9), constant)
    impulse = np.zeros((4, 1, 1))
    impulse[1] = 1.0
    assert np.allclose(smooth_maps(impulse, 0.25)[:, 0, 0], [0, 0.75, 0.1875, 0.046875])
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(InvalidParameterError):
            smooth_maps(maps, bad)


def test_smoothed_video_maps_follow_the_formula(clip, tmp_path):
    v = explain_video(
        bright_model(), clip, "gradcam", layer="1", smooth=0.6, max_frames=6, out=tmp_path
    )
    assert v.smooth == 0.6
    assert np.allclose(v.smoothed, smooth_maps(v.maps, 0.6), atol=1e-6)
    assert np.allclose(v.smoothed[0], v.maps[0])
    assert not np.allclose(v.smoothed[5], v.maps[5])
    # the video shows the smoothed maps, which lag behind the square
    image, got = decoded(clip)[5].astype(int), decoded(v.files["video"])[5].astype(int)
    smoothed, raw = overlay(image, v.smoothed[5]), overlay(image, v.maps[5])
    assert np.abs(got - smoothed).mean() < np.abs(got - raw).mean() / 2
    assert (v.peaks()[5] < np.array(centres()[5])).all()  # up and left: where it came from
    with np.load(v.files["arrays"]) as arrays:
        assert np.array_equal(arrays["smoothed"], v.smoothed)


# refusals


def test_not_a_video_and_corrupt_files(clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    truncated = tmp_path / "half.mp4"
    data = clip.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (text, truncated, tmp_path / "missing.mp4"):
        with pytest.raises(InvalidImageError, match=path.name):
            list(frames(path))
        with pytest.raises(InvalidImageError):
            explain_video(bright_model(), path, "gradcam", out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_limits(clip):
    with pytest.raises(ImageTooLargeError, match="64x48"):
        frames(clip, max_pixels=1000)
    with pytest.raises(InvalidImageError, match="lasts 2.0 s"):
        frames(clip, max_seconds=1.5)
    for bad in ({"stride": 0}, {"stride": 1.5}, {"max_frames": 0}, {"max_seconds": -1}):
        with pytest.raises(InvalidParameterError):
            frames(clip, **bad)


def test_never_overwrites_and_cancel_leaves_nothing(clip, tmp_path):
    model = bright_model()
    v = explain_video(model, clip, "gradcam", layer="1", out=tmp_path, max_frames=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InvalidParameterError, match="already holds"):
        explain_video(model, clip, "gradcam", layer="1", out=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert set(before) == {p.name for p in v.files.values()}
    calls: list[tuple[int, int]] = []

    def stop(done: int, total: int) -> bool:
        calls.append((done, total))
        return done == 0

    fresh = tmp_path / "cancelled"
    with pytest.raises(CancelledError):
        explain_video(model, clip, "gradcam", layer="1", out=fresh, frame_batch=4, progress=stop)
    assert calls == [(0, N), (4, N)]
    assert list(fresh.iterdir()) == []  # no video, no temporary file


def test_missing_pyav_names_the_extra(clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'seethrough\[video\]'"):
        frames(clip)


def test_write_video_pads_odd_sizes(tmp_path):
    images = [np.full((9, 15, 3), 40 * i, np.uint8) for i in range(3)]
    path = write_video(tmp_path / "odd.mp4", images, fps=4)
    got = decoded(path)
    assert len(got) == 3 and got[0].shape == (10, 16, 3)
    assert [int(np.median(g)) for g in got] == pytest.approx([0, 40, 80], abs=3)
    with pytest.raises(InvalidParameterError, match="one size"):
        write_video(tmp_path / "mixed.mp4", [images[0], np.zeros((4, 4, 3), np.uint8)], fps=4)
    assert {p.name for p in tmp_path.iterdir()} == {"odd.mp4"}


# the command line


@pytest.mark.slow  # loads a ResNet-18 (random weights) three times
def test_cli_explains_a_clip(clip, tmp_path, capsys):
    from seethrough.cli.main import main

    out = tmp_path / "out"
    args = ["explain", str(clip), "--model", "resnet18", "--weights", "none", "--size", "32"]
    main([*args, "--stride", "2", "--smooth", "0.5", "--out", str(out)])
    folder = out / "square"
    assert {p.name for p in folder.iterdir()} == {"gradcam.mp4", "gradcam.npz", "gradcam.json"}
    assert len(decoded(folder / "gradcam.mp4")) == N // 2
    manifest = json.loads((folder / "gradcam.json").read_text())
    assert (manifest["stride"], manifest["smooth"], manifest["frames"]) == (2, 0.5, N // 2)
    assert "10 frames" in capsys.readouterr().err

    def one_error(*extra: str, source: Path = clip) -> str:
        with pytest.raises(SystemExit) as exc:
            main(["explain", str(source), *args[2:], *extra])
        assert exc.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    assert "already holds gradcam.mp4" in one_error("--out", str(out))
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"\x1a\x45\xdf\xa3 broken")
    assert "bad.webm" in one_error("--out", str(tmp_path / "o2"), source=bad)
    message = one_error("--smooth", "1.5", "--out", str(tmp_path / "o3"))
    assert "--smooth" in message


# the dashboard


@pytest.mark.slow  # the page and its bundled model
def test_dashboard_plays_the_overlay_of_an_uploaded_clip(clip):
    app_test = pytest.importorskip("streamlit.testing.v1").AppTest
    from seethrough.dashboard import APP_PATH

    at = app_test.from_file(str(APP_PATH), default_timeout=180)
    at.run()
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="upload").set_value(("walk.mp4", clip.read_bytes(), "video/mp4")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("walk.mp4 · 64x48 · 10 fps · 20 frames" in c.value for c in at.caption)
    assert not at.dataframe  # no image predictions for a clip
    at.number_input(key="video_stride").set_value(5)
    at.slider(key="video_smooth").set_value(0.5)
    at.button(key="explain_video").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    _, data, count = at.session_state["video_result"]
    assert count == 4
    played = Path(at.session_state["upload_folder"].path) / "played.mp4"
    played.write_bytes(data)
    assert len(decoded(played)) == 4 and video_info(played).fps == FPS / 5
    assert at.get("video"), "no video element on the page"

    # a file that is not a video, and one over the page's limits: one line each
    at.file_uploader(key="upload").set_value(("x.mp4", b"garbage" * 50, "video/mp4")).run()
    assert not at.exception and len(at.error) == 1 and "x.mp4" in at.error[0].value
    assert "clip-" not in at.error[0].value
