"""The synthetic scenes (several digits per image) and the segmenter and detector trained on them:
their accuracy, their cache, their place in the zoo, and explanations that land on the object
they explain (a checkable fact, since every object's pixels are known)."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch

import seethrough
from seethrough.datasets.synthetic import make_scenes
from seethrough.errors import InvalidParameterError, WeightsMismatchError, WeightsUnavailableError
from seethrough.models import scenes
from seethrough.targets import Box, Mask

# The first test that asks for the trained models trains both once (`scene_cache`: about 365 s
# and 60 s on one torch thread), inside that test's time limit.
pytestmark = pytest.mark.timeout(1200)

# Floors a little below what the models trained by the defaults (seed 0, one torch thread, the
# trunks started from the session's digits model) measured; the measured value follows each.
# The segmenter's IoU is against the stroke masks (not dilated since cache v4: the dilated ring
# was mostly not drawn; the v4 recipe measured 0.886 against those and 0.850 against these).
MIOU_FLOOR = 0.92  # segmenter mean IoU on 200 held-out scenes: 0.952 (worst digit 0.889)
RECALL_FLOOR = 0.95  # detector recall at IoU 0.5 on the same scenes: 0.984
PRECISION_FLOOR = 0.8  # its precision: 0.877
POINTING_FLOOR = 0.8  # Grad-CAM of a box peaks on its object: 0.92 (a centre peak: 0.11)
OTHERS_CEILING = 0.15  # ... on another object: 0.07
ENERGY_FLOOR = 0.85  # Grad-CAM mass on a class's mask: 0.95 (area 0.067, centre blob 0.10)
CELL_CHANGE = 0.75  # largest |logit change| of a box after a 4-pixel shift: 0.14 (mean 0.02)
SHIFT_CHANGE = 1.0  # mean |logit change| after a (2, 3)-pixel shift: 0.78


@pytest.fixture(scope="session")
def scene_cache(request, digits_cache) -> object:
    """A cache folder holding both trained scene models: trained once (one torch thread, see
    ``digits_cache``) and kept in pytest's cache between runs (file names carry the version).
    Their trunks start from the digits model's: the session's, copied in, not trained again."""
    import shutil

    from seethrough._io import write_atomically
    from seethrough.core.threads import torch_threads
    from seethrough.models import digits

    folder = request.config.cache.mkdir("seethrough-scene-models")
    weights = digits.cache_path(digits_cache)
    if not digits.cache_path(folder).exists():
        for source in (weights.with_suffix(".json"), weights):  # the weights last: they count
            write_atomically(folder / source.name, lambda part, s=source: shutil.copy(s, part))
    with torch_threads(1):
        scenes.load_segmenter(cache_dir=folder, progress=False)
        scenes.load_detector(cache_dir=folder, progress=False)
    return folder


@pytest.fixture(scope="session")
def segmenter(scene_cache):
    return scenes.scene_model("synthetic_segmenter", cache_dir=scene_cache)


@pytest.fixture(scope="session")
def detector(scene_cache):
    return scenes.scene_model("synthetic_detector", cache_dir=scene_cache)


@pytest.fixture(scope="session")
def held_out():
    """Scenes of three digits, test split, a seed training never saw."""
    return make_scenes(24, objects=(3, 3), seed=11, split="test")


# ------------------------------------------------------------------------------------ scenes


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_scenes_are_deterministic_disjoint_and_consistent():
    data = make_scenes(300, seed=4, split="test")
    head = make_scenes(40, seed=4, split="test")
    for field in ("images", "masks", "boxes", "labels", "counts"):
        assert np.array_equal(getattr(data, field)[:40], getattr(head, field))
    assert not np.array_equal(make_scenes(5, seed=5).images, make_scenes(5, seed=4).images)
    assert set(data.counts.tolist()) == {2, 3}
    assert data.images.shape == (300, 96, 96, 3) and data.masks.shape == (300, 3, 96, 96)
    for i in range(len(data)):
        masks, boxes, labels = data.instances(i)
        assert masks.any((1, 2)).all() and (labels >= 0).all()
        n = len(boxes)
        assert not any(_overlap(boxes[a], boxes[b]) for a in range(n) for b in range(a))
        for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=False):
            assert mask[y0:y1, x0:x1].sum() == mask.sum()  # the tight box holds the mask
    empty = data.labels < 0
    assert not data.masks[empty].any() and (data.boxes[empty] == 0).all()
    classes = data.segmentation()
    assert classes.dtype == np.int64 and classes.shape == (300, 96, 96)
    for i in range(len(data)):
        masks, _, labels = data.instances(i)
        for mask, label in zip(masks, labels, strict=True):
            assert (classes[i][mask] == label + 1).all()
        assert (classes[i][~masks.any(0)] == 0).all()
    overlapping = dataclasses.replace(data, masks=np.ones_like(data.masks[:2]))
    overlapping.labels = np.array([[4, 7, -1], [2, 1, 0]])
    assert (overlapping.segmentation() == np.array([8, 3])[:, None, None]).all()  # larger wins


def test_scenes_without_digits_keep_the_clutter_and_masks_mark_what_is_drawn():
    """The same scene without its digits differs only where a digit is drawn, and a mask marks
    the drawn pixels: none of them looks like the bare background. The one-pixel ring that
    dilating the masks would add (as the single-digit benchmark's masks are) is mostly left
    as the background, so a segmenter could not see it in the image."""
    data = make_scenes(20, seed=2)
    bare = make_scenes(20, seed=2, with_digits=False)
    assert np.array_equal(data.boxes, bare.boxes) and np.array_equal(data.labels, bare.labels)
    mask = data.masks.any(1)
    diff = np.abs(data.images.astype(int) - bare.images.astype(int)).max(-1)
    assert diff[~mask].mean() < 1  # only the soft stroke edges beyond the masks differ
    assert diff[mask].mean() > 100 and (diff[mask] < 10).mean() < 0.002
    ring = _dilate(mask, 1) & ~mask
    assert (diff[ring] < 5).mean() > 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"objects": (0, 2)}, {"objects": (3, 2)}, {"objects": 2}, {"size": 16}, {"seed": -1}],
)
def test_scenes_refuse_bad_parameters(kwargs):
    with pytest.raises(InvalidParameterError):
        make_scenes(2, **kwargs)


# ---------------------------------------------------------------------------- trained models


def test_segmenter_mean_iou_on_held_out_scenes(segmenter):
    miou, per_class = scenes.mean_iou(segmenter.module, make_scenes(200, seed=7, split="test"))
    assert miou > MIOU_FLOOR, per_class
    assert min(per_class) > MIOU_FLOOR - 0.15 and per_class[0] > 0.97


def test_detector_recall_on_held_out_scenes(detector):
    scores = scenes.detection_recall(detector.module, make_scenes(200, seed=7, split="test"))
    assert scores["recall"] > RECALL_FLOOR, scores
    assert scores["class_agnostic_recall"] >= scores["recall"]
    assert scores["precision"] > PRECISION_FLOOR, scores
    bare = make_scenes(100, seed=7, split="test", with_digits=False)
    assert scenes.detection_recall(detector.module, bare)["recall"] < 0.05  # clutter is no digit


def test_zoo_loads_both_from_the_cache(scene_cache, monkeypatch):
    monkeypatch.setenv("SEETHROUGH_CACHE", str(scene_cache))
    stamps = {p.name: p.stat().st_mtime_ns for p in scene_cache.iterdir()}
    assert seethrough.list_models(source="scenes") == ["synthetic_segmenter", "synthetic_detector"]
    det = seethrough.load_model("synthetic_detector")
    seg = seethrough.load_model("synthetic_segmenter")
    assert {p.name: p.stat().st_mtime_ns for p in scene_cache.iterdir()} == stamps  # no training
    assert (det.task, seg.task) == ("detection", "segmentation")
    assert det.labels == list("0123456789") and seg.labels == ["background", *"0123456789"]
    assert det.default_layer == seg.default_layer == "features.block4"
    assert det.preprocessing.size == seg.preprocessing.size == 96
    data = make_scenes(1, objects=(3, 3), seed=3, split="test")
    labels = data.instances(0)[2]
    assert {j for _, j in _correct_boxes(det, data, 0)} == {0, 1, 2}  # each digit found
    masks = seg.predict(data.images[0])
    top = {name for name, _ in masks.present[:4]}  # stray pixels of other digits come after
    assert top == {"background", *map(str, labels.tolist())}
    random = seethrough.load_model("synthetic_detector", weights="none")
    assert random.weights == "none (random)" and len(random.predict(data.images[0])) == 20
    with pytest.raises(InvalidParameterError, match="detectors only"):
        seethrough.load_model("synthetic_segmenter", weights="none", max_boxes=3)


def test_cache_refuses_unreadable_or_foreign_weights(tmp_path):
    from safetensors.torch import save_file

    path = scenes.cache_path("detector", tmp_path)
    path.write_bytes(b"not safetensors")
    with pytest.raises(WeightsUnavailableError, match="retrain=True"):
        scenes.load_detector(cache_dir=tmp_path)
    save_file({"features.stem.0.weight": torch.zeros(1)}, str(path))
    with pytest.raises(WeightsMismatchError, match="do not fit SceneDetector"):
        scenes.load_detector(cache_dir=tmp_path)
    with pytest.raises(InvalidParameterError):
        scenes.cache_path("classifier", tmp_path)  # type: ignore[arg-type]


def test_fresh_training_renders_new_scenes_for_every_epoch(monkeypatch):
    from seethrough.models import _trained

    drawn = []

    def spy(n, **kwargs):
        drawn.append((n, kwargs["seed"], kwargs["split"]))
        return make_scenes(n, **kwargs)

    monkeypatch.setattr(scenes, "make_scenes", spy)
    tiny = dict(n_train=8, epochs=3, batch=8, n_test=4, seed=2, threads=1, progress=False)
    tiny |= {"trunk": False}  # the trunk's start: the next test
    _, info = scenes.train_segmenter(**tiny)
    assert drawn == [(8, 2, "train"), (8, 3, "train"), (8, 4, "train"), (4, 3, "test")]
    assert info["fresh"] is True and info["n_train"] == 8
    drawn.clear()
    _, info = scenes.train_segmenter(**tiny, fresh=False)
    assert drawn == [(8, 2, "train"), (4, 3, "test")] and info["fresh"] is False
    data = make_scenes(8, seed=2)
    targets = scenes._segmentation_targets(data)
    with pytest.raises(InvalidParameterError, match="gave 4 items, not 8"):
        _trained.fit(
            scenes.SceneSegmenter(), data.images, targets, torch.nn.functional.cross_entropy,
            scenes._to_input, epochs=2, batch=8, lr=1e-3, seed=0, label="x", progress=False,
            refresh=lambda epoch: (data.images[:4], targets[:4]),
        )  # fmt: skip


def _tiny_fit(data, refresh, loss_of=scenes._segmentation_loss, epochs=3):
    from seethrough.models import _trained

    torch.manual_seed(0)
    targets = scenes._segmentation_targets(data)
    return _trained.fit(
        scenes.SceneSegmenter(width=16, edge=4), data.images, targets, loss_of, scenes._to_input,
        epochs=epochs, batch=8, lr=1e-3, seed=0, label="x", progress=False, refresh=refresh,
    )  # fmt: skip


def test_the_next_epochs_scenes_are_rendered_while_an_epoch_trains(monkeypatch):
    from concurrent.futures import Future

    from seethrough.core.threads import torch_threads
    from seethrough.models import _trained

    data, calls = make_scenes(16, seed=2), []

    def refresh(epoch):
        calls.append((epoch, threading.current_thread().name))
        fresh = make_scenes(16, seed=2 + epoch)
        return fresh.images, scenes._segmentation_targets(fresh)

    class Inline:  # the same calls, made in the caller's thread when asked for
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, fn, *args):
            done = Future()
            done.set_result(fn(*args))
            return done

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    with torch_threads(1):
        ahead = _tiny_fit(data, refresh)
        assert [epoch for epoch, _ in calls] == [1, 2]
        assert all(name.startswith("seethrough-refresh") for _, name in calls)
        calls.clear()
        monkeypatch.setattr(_trained, "ThreadPoolExecutor", Inline)
        inline = _tiny_fit(data, refresh)
        assert calls == [(1, threading.main_thread().name), (2, threading.main_thread().name)]
    weights = zip(ahead.state_dict().values(), inline.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    with torch_threads(2):  # the pool takes both cores: no thread of its own
        calls.clear()
        monkeypatch.undo()
        _tiny_fit(data, refresh)
        assert calls == [(1, threading.main_thread().name), (2, threading.main_thread().name)]


def test_a_failed_training_waits_for_the_scenes_in_the_making_and_passes_on_their_error():
    from seethrough.core.threads import torch_threads

    data, finished, before = make_scenes(8, seed=2), [], torch.get_num_threads()

    def slow(epoch):
        time.sleep(0.5)
        finished.append(epoch)
        return data.images, scenes._segmentation_targets(data)

    def failing(logits, target):
        raise RuntimeError("the loss failed")

    def broken(epoch):
        raise ValueError(f"no scenes for epoch {epoch}")

    with torch_threads(1):
        with pytest.raises(RuntimeError, match="the loss failed"):
            _tiny_fit(data, slow, loss_of=failing)
        assert finished == [1]  # waited for, not left running past the call
        assert not any(t.name.startswith("seethrough-refresh") for t in threading.enumerate())
        with pytest.raises(ValueError, match="no scenes for epoch 1"):
            _tiny_fit(data, broken)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kind", ["segmenter", "detector"])
def test_training_starts_from_the_digits_models_trunk(kind, digits_cache, monkeypatch):
    from seethrough.models import digits

    starts = []
    fit = scenes.fit

    def spy(model, *args, **kwargs):
        starts.append({k: v.clone() for k, v in model.features.state_dict().items()})
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(scenes, "fit", spy)
    train = {"segmenter": scenes.train_segmenter, "detector": scenes.train_detector}[kind]
    tiny = dict(n_train=8, epochs=1, batch=8, n_test=4, threads=1, progress=False)
    _, info = train(**tiny, cache_dir=digits_cache)
    _, random = train(**tiny, trunk=False)
    trunk = digits.load_digits_model(cache_dir=digits_cache, progress=False).features
    assert all(torch.equal(starts[0][k], v) for k, v in trunk.state_dict().items())
    assert info["trunk"] == f"synthetic_digits-{digits.CACHE_VERSION}" and random["trunk"] is None
    assert not torch.equal(starts[1]["block4.0.weight"], trunk.block4[0].weight)


def test_each_model_has_its_own_cache_version(tmp_path):
    for kind in ("segmenter", "detector"):
        name = scenes.cache_path(kind, tmp_path).name
        assert name == f"synthetic_scene_{kind}-{scenes.CACHE_VERSIONS[kind]}.safetensors"


# ------------------------------------------------------------------------------ explanations
#
# The Grad-CAM checks also score two controls that must fail them: a map that peaks at the
# centre of the image (where a net with no idea of the objects would put its mass) and the map
# of another object of the same image. Same statistics, same thresholds: they are shown to tell
# the explanation of object k from those two.

CENTRE = (48, 48)


def _peak(saliency: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(np.argmax(saliency), saliency.shape)
    return int(x), int(y)


def _inside(box, x: int, y: int, margin: int = 0) -> bool:
    x0, y0, x1, y1 = box
    return x0 - margin <= x < x1 + margin and y0 - margin <= y < y1 + margin


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (a square window): a stroke is thinner than a CAM's
    cell and than the soft edge the renderer draws beyond the mask."""
    grown = torch.nn.functional.max_pool2d(
        torch.from_numpy(mask).float()[None], 2 * radius + 1, stride=1, padding=radius
    )
    return grown[0].numpy() > 0


def _energy(saliency: np.ndarray, region: np.ndarray) -> float:
    """The share of the positive mass of ``saliency`` inside ``region`` (energy pointing)."""
    positive = np.clip(saliency, 0, None)
    return float(positive[region].sum() / max(positive.sum(), 1e-12))


def _correct_boxes(detector, data, i: int) -> list[tuple[int, int]]:
    """``(box index, object index)`` of the boxes of image ``i`` that find an object: its label
    and IoU >= 0.5 with it."""
    from seethrough.core.detection import box_iou

    _, boxes, labels = data.instances(i)
    truth = torch.from_numpy(boxes).float()
    pairs = []
    for k, found in enumerate(detector.predict(data.images[i])):
        overlap = box_iou(truth, torch.tensor(found.box, dtype=torch.float32)).numpy()
        j = int(overlap.argmax())
        if overlap[j] >= 0.5 and found.label == str(labels[j]):
            pairs.append((k, j))
    return pairs


@pytest.fixture(scope="session")
def box_maps(detector, held_out):
    """Grad-CAM of every correct box of the held-out scenes: ``(image, object, map)``."""
    out = []
    for i in range(len(held_out)):
        for k, j in _correct_boxes(detector, held_out, i):
            e = seethrough.explain(detector, held_out.images[i], "gradcam", target=Box(index=k))
            out.append((i, j, e.map))
    return out


def _pointing(data, peaks) -> tuple[float, float]:
    """For ``(image, object, (x, y))``: the share of peaks inside the object's box (2 pixels of
    slack: the CAM's 4-pixel cells) and the share inside another object's box."""
    hits = others = 0
    for i, j, (x, y) in peaks:
        _, boxes, _ = data.instances(i)
        hits += _inside(boxes[j], x, y, margin=2)
        others += any(_inside(b, x, y) for o, b in enumerate(boxes) if o != j)
    return hits / len(peaks), others / len(peaks)


def test_detector_gradcam_of_each_box_points_at_its_object(box_maps, held_out):
    """Grad-CAM of box k peaks inside object k (the pointing game), and seldom inside another
    object: Grad-CAM weighs each channel of the layer by its gradient averaged over the map, so
    a channel box k's score uses counts wherever it fires, on another digit's strokes too."""
    assert len(box_maps) >= 60  # of 72 objects
    hits, others = _pointing(held_out, [(i, j, _peak(m)) for i, j, m in box_maps])
    centre, _ = _pointing(held_out, [(i, j, CENTRE) for i, j, _ in box_maps])
    swapped = []  # the map of another object of the same image, scored against object j
    for i, j, _ in box_maps:
        other = [m for i2, j2, m in box_maps if i2 == i and j2 != j]
        if other:
            swapped.append((i, j, _peak(other[0])))
    wrong, _ = _pointing(held_out, swapped)
    assert hits > POINTING_FLOOR and others < OTHERS_CEILING, (hits, others)
    assert centre < POINTING_FLOOR / 3 and wrong < OTHERS_CEILING, (centre, wrong)


@pytest.mark.parametrize("method", ["hirescam", "layercam"])
def test_element_wise_cams_of_each_box_point_at_its_object_and_never_at_another(
    detector, held_out, method
):
    """HiResCAM and LayerCAM keep the gradient element-wise (no average per channel), so the
    map of box k stays on object k: over 95 % of the boxes on their own object, under 3 % on
    another (Grad-CAM: 79 % and 19 %, the test above)."""
    peaks = []
    for i in range(len(held_out)):
        for k, j in _correct_boxes(detector, held_out, i):
            e = seethrough.explain(detector, held_out.images[i], method, target=Box(index=k))
            peaks.append((i, j, _peak(e.map)))
    assert len(peaks) >= 60
    hits, others = _pointing(held_out, peaks)
    assert hits > 0.95 and others < 0.03, (hits, others)


@pytest.fixture(scope="session")
def class_maps(segmenter, held_out):
    """Grad-CAM of each digit class the segmenter finds in the first 8 held-out scenes:
    ``(image, label, region, map)``, the region the class's predicted pixels grown by 3."""
    out = []
    for i in range(8):
        classes = segmenter.predict(held_out.images[i]).classes
        for label in held_out.instances(i)[2].tolist():
            if not (classes == label + 1).any():
                continue
            region = _dilate(classes == label + 1, 3)
            e = seethrough.explain(
                segmenter, held_out.images[i], "gradcam", target=Mask(str(label))
            )
            out.append((i, label, region, e.map))
    return out


def _blob(shape: tuple[int, int], sigma: float = 12.0) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((xs - CENTRE[0]) ** 2 + (ys - CENTRE[1]) ** 2) / (2 * sigma**2))


def test_segmenter_gradcam_of_a_class_lies_on_its_mask(class_maps):
    """Grad-CAM of a class's mask puts most of its positive mass on the pixels predicted as
    that class, many times the region's share of the image; a centre blob or the map of
    another class in the same image does not."""
    assert len(class_maps) >= 20  # of 24 digits
    inside = np.mean([_energy(m, region) for _, _, region, m in class_maps])
    area = np.mean([region.mean() for _, _, region, _ in class_maps])
    centre = np.mean([_energy(_blob(m.shape), region) for _, _, region, m in class_maps])
    swapped = [
        _energy(other, region)
        for i, label, region, _ in class_maps
        for i2, label2, _, other in class_maps
        if i2 == i and label2 != label
    ]
    assert inside > ENERGY_FLOOR and inside > 4 * area, (inside, area)
    assert centre < ENERGY_FLOOR / 2 and np.mean(swapped) < ENERGY_FLOOR / 2, (centre, swapped)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("occlusion", {"window": 16, "stride": 8, "score": "logit"}),
        ("lime", {"n_samples": 200, "n_segments": 40, "score": "logit", "seed": 0}),
    ],
)
def test_occlusion_and_lime_agree_with_gradcam_on_a_class(
    segmenter, held_out, class_maps, method, params
):
    """Perturbation maps of the same class mask agree in sign with Grad-CAM: hiding the class's
    pixels lowers its score (mean attribution inside the region positive, above the rest of the
    image), and the maps correlate positively with Grad-CAM's."""
    inside, outside, correlation = [], [], []
    for i, label, region, cam in class_maps[:4]:
        m = seethrough.explain(
            segmenter, held_out.images[i], method, target=Mask(str(label)), **params
        ).map
        inside.append(m[region].mean())
        outside.append(m[~region].mean())
        correlation.append(np.corrcoef(m.ravel(), cam.ravel())[0, 1])
    assert min(inside) > 0 and all(a > b for a, b in zip(inside, outside, strict=True)), (
        inside,
        outside,
    )
    assert min(correlation) > 0.3 and np.mean(correlation) > 0.5, correlation


def _shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``image`` moved ``dx`` pixels right and ``dy`` down, the border repeated."""
    size = image.shape[0]
    return np.pad(image, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[:size, :size]


def test_a_box_is_rematched_after_a_shift_and_scores_zero_once_its_object_is_blanked(
    detector, held_out
):
    """A Box target fixed on the clean image follows its object: in the image shifted by one
    cell of the detector's grid (4 pixels down, where the net is equivariant) and by (2, 3)
    pixels the re-matched box is the moved box, scored like the clean one (a shift by part of a
    cell moves the centre inside its cell, which changes its logit more); with the object's
    pixels replaced by the scene's own background (the same clutter rendered without digits) no
    box re-matches and the score is 0."""
    from seethrough.core.detection import box_iou, packed_boxes

    bare = make_scenes(len(held_out), objects=(3, 3), seed=11, split="test", with_digits=False)
    runner = detector.make_runner()
    moves = ((0, 4), (2, 3))
    found, overlap, change = ({m: [] for m in moves} for _ in range(3))
    gone = []
    for i in range(8):
        image, (masks, _, _) = held_out.images[i], held_out.instances(i)
        for k, j in _correct_boxes(detector, held_out, i):
            blank = image.copy()
            hide = _dilate(masks[j], 2)
            blank[hide] = bare.images[i][hide]
            images = [image, *(_shift(image, dx, dy) for dx, dy in moves), blank]
            out = runner.outputs(detector.preprocess(images))
            _, score = Box(index=k).bind(out[:1], detector.class_index)
            scores, (best, matched) = score(out), score.match(out)
            boxes = packed_boxes(out)[torch.arange(len(out)), best]
            for n, (dx, dy) in enumerate(moves, 1):
                found[dx, dy].append(bool(matched[n]))
                if matched[n]:
                    expected = boxes[0] + torch.tensor([dx, dy, dx, dy], dtype=boxes.dtype)
                    overlap[dx, dy].append(float(box_iou(boxes[n], expected)))
                    change[dx, dy].append(float((scores[n] - scores[0]).abs()))
            gone.append(not matched[-1] and float(scores[-1]) == 0.0)
    assert len(gone) >= 20 and all(gone)
    assert all(found[0, 4]) and min(overlap[0, 4]) > 0.85 and max(change[0, 4]) < CELL_CHANGE
    assert np.mean(found[2, 3]) > 0.9 and min(overlap[2, 3]) > 0.7
    assert np.mean(change[2, 3]) < SHIFT_CHANGE, change[2, 3]
