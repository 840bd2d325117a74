"""The live demo's callbacks on a tiny run (direct calls), and one round trip through its HTTP API."""

from __future__ import annotations

import json
import math
import shutil
import socket
from pathlib import Path

import gradio as gr
import matplotlib
import numpy as np
import pytest
import torch
from pictures import gallery_arrays
from PIL import Image

from apps.gradio_app import Callbacks, build_app
from apps.launch import serve
from distill.data.photos import photo_names
from distill.data.scenes import SEGMENT_CLASSES, SceneGenerator
from distill.run_dir import RunDir, trained_resolution, trained_side
from workbench.eval.encoders import build_encoder, random_encoder
from workbench.eval.probes.dense_head import DenseProbe
from workbench.eval.probes.saved import save_probe
from workbench.eval.row_cache import encoder_key, probe_folder
from workbench.eval.similarity import agreement_score
from workbench.explore.explorer import OWN_SPACE, POSITION_PHOTOS, Explorer
from workbench.viz.panels import label_colours, palette, pca_colours, to_picture
from workbench.viz.upsample import upsample

SIDE = 64  # display and encoder resolution: the tiny run's models are trained at 64 px
SEG_CLASS, DEPTH = 3, 2.0  # what the hand-made probes predict everywhere


def constant_probes(in_dim: int, folder: Path) -> None:
    """A segmentation probe that always says SEG_CLASS and a depth probe that always says DEPTH."""
    segmentation = DenseProbe(in_dim, "segmentation", len(SEGMENT_CLASSES)).eval()
    depth = DenseProbe(in_dim, "depth").eval()
    with torch.no_grad():
        for probe in (segmentation, depth):
            probe.head.weight.zero_()
        segmentation.head.bias.zero_()[SEG_CLASS] = 10.0
        depth.head.bias.fill_(math.log(DEPTH))
    save_probe(segmentation, folder / "segmentation.safetensors")
    save_probe(depth, folder / "depth.safetensors")


def make_scored_run(source: Path, folder: Path) -> Path:
    """A copy of a run with a hand-made scoreboard in RUN/eval: known scores and constant probes for
    its multires stage (seg_miou 0.5) and direct stage (seg_miou 0.4)."""
    run = folder / "tiny"
    shutil.copytree(source, run)
    rows = [{"name": "edges", "role": "expert", "kind": "expert", "spec": "edges", "seg_miou": 0.6}]
    rows[0]["encoder"] = encoder_key("edges")
    for stage, miou, rmse in (("multires", 0.5, 0.3), ("direct", 0.4, 0.2)):
        spec = str(run / stage)
        row = {"name": f"tiny/{stage}", "role": stage, "spec": spec, "seg_miou": miou, "depth_rmse": rmse}
        rows.append(row | {"encoder": encoder_key(spec)})
        constant_probes(build_encoder(spec).patch_dim, probe_folder(run / "eval", encoder_key(spec)))
    (run / "eval" / "scoreboard.json").write_text(json.dumps({"settings": {"resolution": 64}, "rows": rows}))
    return run


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    return make_scored_run(tiny_run, tmp_path_factory.mktemp("gradio"))


@pytest.fixture(scope="module")
def calls(run) -> Callbacks:
    return Callbacks(Explorer(run, display=SIDE))


@pytest.fixture(scope="module")
def key(calls) -> str:
    return calls.load_photo("chelsea")[0]


def student(run: Path) -> str:
    return str(run / "multires")


def test_encoders_on_offer_are_found_in_the_runs(calls, run):
    specs = [spec for _, spec in calls.explorer.encoder_choices()]
    assert specs == [
        "semantic",
        "text",
        "edges",
        *(str(run / s) for s in ("proxy", "student", "multires", "direct")),
        f"random:{run / 'student'}",  # the run's random floor
    ]
    assert calls.explorer.default_specs() == ["semantic", "text", "edges", str(run / "proxy"), student(run)]
    _, teacher, probed, note = calls.rescan(["edges", str(run / "proxy")], [])
    assert teacher["value"] == str(run / "proxy") and [c[1] for c in teacher["choices"]][-1] == str(
        run / "direct"
    )
    assert probed["value"] == str(run / "proxy") and note == ""


def test_images_in_and_unreadable_ones_are_one_line_errors(calls, tmp_path):
    key, picture, point, working = calls.load_scene(3)
    assert picture.shape == (SIDE, SIDE, 3) and point == (0.5, 0.5)
    assert tuple(picture[SIDE // 2, SIDE // 2]) == (0, 255, 0)  # the query cross at the centre
    # the upload box is given the working image itself, without the cross
    assert np.array_equal(working, calls.explorer.picture(key)) and not np.array_equal(working, picture)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(photo)
    same, _, _ = calls.load_upload(str(photo))
    assert torch.allclose(
        calls.explorer.cache.image(same), torch.full((3, SIDE, SIDE), 200 / 255), atol=1 / 255
    )
    assert calls.load_upload(None) == (gr.skip(), gr.skip(), gr.skip())  # a cleared image changes nothing
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(gr.Error, match=r"notes.txt is not a readable image"):
        calls.load_upload(str(notes))
    small = Callbacks(Explorer(None, display=SIDE, max_pixels=1000))
    with pytest.raises(gr.Error, match=r"photo.png is 30x40 \(0 MP\); the limit is 0.001 MP"):
        small.load_upload(str(photo))


def test_feature_maps_stream_per_encoder_and_never_recompute(calls, key, run):
    specs = ["edges", student(run)]
    store = calls.explorer.cache
    before = store.forward_passes
    steps = list(calls.feature_maps(key, specs, SIDE, OWN_SPACE, False, False, 0.0))
    assert [len(gallery) for gallery, _ in steps] == [
        2,
        3,
    ]  # the input, then one map per encoder as it is done
    assert [caption for _, caption in steps[-1][0]] == [
        "input",
        "edges · 8x8 patches",
        "tiny/multires · 4x4 patches",
    ]
    assert steps[-1][1].startswith("2 of 2 encoders") and "one basis each · unmasked" in steps[-1][1]
    assert store.forward_passes - before == 2
    masked, shown = list(calls.feature_maps(key, specs, SIDE, OWN_SPACE, False, True, 0.0))[-1]
    masked = gallery_arrays(masked)
    assert "background masked (threshold 0 std)" in shown
    black = (masked[1][0] == 0).all(-1).mean()
    assert 0 < black < 1  # background patches painted black
    gallery, notes = list(calls.feature_maps(key, specs, SIDE, OWN_SPACE, True, False, 0.0))[-1]
    assert "one basis each" in notes and len(gallery) == 3  # own features: no joint basis
    gallery, notes = list(calls.feature_maps(key, specs, SIDE, "edges", True, False, 0.0))[-1]
    assert [c for _, c in gallery] == [
        "input",
        "edges (expert) · 8x8 patches",
        "tiny/multires → edges · 4x4 patches",
    ]
    assert store.forward_passes - before == 2  # display options and spaces reuse the features
    list(calls.feature_maps(key, specs, 2 * SIDE, OWN_SPACE, False, False, 0.0))
    assert store.forward_passes - before == 4  # a new resolution is new features


def test_clicked_patch_is_most_similar_to_itself(calls, key, run):
    spec = student(run)
    point, picture, gallery, notes = calls.click(
        key, [spec], SIDE, gr.SelectData(None, {"index": [6, 6], "value": None})
    )
    assert point == (6 / SIDE, 6 / SIDE) and notes == "similarity to the patch at (0.09, 0.09)"
    assert tuple(picture[6, 6]) == (0, 255, 0)
    ((similar, caption),) = gallery_arrays(gallery)
    assert caption.startswith("tiny/multires · ") and caption.endswith(" to 1")
    # pixel (14, 14) lies in the clicked 16x16 patch, off the cross: similarity 1 (the top of the colour
    # scale) over the image at alpha 0.65
    top = torch.tensor(matplotlib.colormaps["coolwarm"](1.0)[:3])
    expected = (0.35 * calls.explorer.cache.image(key)[:, 14, 14] + 0.65 * top) * 255
    assert np.abs(similar[14, 14].astype(float) - expected.numpy()).max() <= 1


def test_keep_aspect_shows_a_wide_upload_whole_and_maps_clicks_by_width_and_height(calls, run, tmp_path):
    photo = tmp_path / "wide.png"
    pixels = np.random.default_rng(0).integers(0, 256, (90, 160, 3), np.uint8)
    Image.fromarray(pixels).save(photo)
    key, query, _ = calls.load_upload(str(photo))
    assert query.shape == (SIDE, SIDE, 3)  # unticked: the centre square, as before
    height, width = calls.explorer.cache.image(key, keep_aspect=True).shape[-2:]
    assert height < width and abs(width / height - 160 / 90) < 0.05
    specs = ["edges", student(run)]
    gallery, _ = list(calls.feature_maps(key, specs, SIDE, OWN_SPACE, False, False, 0.0, keep_aspect=True))[
        -1
    ]
    assert all(picture.shape == (height, width, 3) for picture, _ in gallery_arrays(gallery))
    grids = [caption.split(" · ")[1].split(" ")[0].split("x") for _, caption in gallery[1:]]
    assert len(grids) == 2 and all(int(h) < int(w) for h, w in grids)
    square, _ = list(calls.feature_maps(key, specs, SIDE, OWN_SPACE, False, False, 0.0))[-1]
    assert all(picture.shape == (SIDE, SIDE, 3) for picture, _ in gallery_arrays(square))
    click = gr.SelectData(None, {"index": [width - 1, height // 2], "value": None})
    point, picture, similar, _ = calls.click(key, specs, SIDE, click, keep_aspect=True)
    assert point == ((width - 1) / width, (height // 2) / height)
    assert picture.shape == gallery_arrays(similar)[0][0].shape == (height, width, 3)
    assert tuple(picture[height // 2, width - 1]) == (0, 255, 0)


def test_teacher_vs_student_agreement_and_expert_readings(calls, key, run):
    spec = student(run)
    agreement, readings, table, _ = calls.teacher_student(key, spec, SIDE)
    captions = [c for _, c in agreement]
    assert [c.split(" · ")[0] for c in captions] == [
        "semantic agreement",
        "text agreement",
        "edges agreement",
    ]
    assert [c for _, c in readings] == [
        "text · expert", "text · via tiny/multires", "edges · expert", "edges · via tiny/multires",
    ]  # fmt: skip
    store = calls.explorer.cache
    estimate = store.features(key, spec, SIDE).experts["edges"].patches
    expected = agreement_score(estimate, store.features(key, "edges", SIDE).patches)
    assert f"edges agreement · mean {expected:.2f}" in captions
    assert [row[0] for row in table] == ["1", "2", "3", "4", "5"]
    assert all(cell.endswith(")") for row in table for cell in row[1:])  # 'label (probability)'
    with pytest.raises(gr.Error, match="edges is not a distilled encoder"):
        calls.teacher_student(key, "edges", SIDE)


def test_probes_of_a_run_predict_what_they_were_trained_to(calls, key, run):
    gallery, notes = calls.probes(key, student(run), SIDE)
    (segmentation, seg_caption), (_, depth_caption) = gallery_arrays(gallery)
    assert seg_caption == "segmentation" and depth_caption == f"depth · {DEPTH:.2f} to {DEPTH:.2f}"
    colour = (palette(len(SEGMENT_CLASSES))[SEG_CLASS] * 255).round().numpy()
    assert (segmentation == colour).all()
    assert "segments: " in notes and SEGMENT_CLASSES[SEG_CLASS] in notes and "trained at 64 px" in notes
    assert "trained on generated scenes; on a photo they can only answer in the scenes' terms" in notes
    gallery, notes = calls.probes(key, str(run / "proxy"), SIDE)
    assert gallery == [] and f"`eupe eval --runs {run} --out {run}/eval`" in notes
    # a probe file that does not load is a note; the other probes still show
    probes = probe_folder(run / "eval", encoder_key(str(run / "direct")))
    (probes / "depth.safetensors").write_bytes(b"broken")
    gallery, notes = calls.probes(key, str(run / "direct"), SIDE)
    assert [caption for _, caption in gallery] == ["segmentation"] and "cannot use the depth probe" in notes


def test_probes_on_a_scene_show_its_ground_truth_beside_each_prediction(calls, run):
    scene = calls.load_scene(5)[0]
    gallery, notes = calls.probes(scene, student(run), SIDE)
    captions = [caption for _, caption in gallery]
    assert captions[:3] == [
        "segmentation",
        "segmentation · ground truth",
        f"depth · {DEPTH:.2f} to {DEPTH:.2f}",
    ]
    assert (
        captions[3].startswith("depth · ") and captions[3].endswith(" · ground truth") and len(captions) == 4
    )
    labels = SceneGenerator(SIDE, seed=5).batch(0, 1).segmentation[0]
    truth = to_picture(label_colours(labels, len(SEGMENT_CLASSES)), SIDE)
    assert np.array_equal(gallery_arrays(gallery)[1][0], truth)
    assert "trained on generated scenes, like this one" in notes


def test_feature_map_colours_repeat_across_toggles_and_added_encoders(calls, key, run):
    def pictures(specs: list[str], **options: object) -> dict[str, np.ndarray]:
        view = list(calls.explorer.feature_maps(key, specs, SIDE, **options))[-1]
        return {panel.caption: panel.image for panel in view.panels}

    first = pictures([student(run)])
    pictures([student(run)], masked=True)  # toggled on, then off again
    again = pictures([student(run)])
    with_others = pictures(["edges", student(run), str(run / "direct")])
    caption = "tiny/multires · 4x4 patches"
    assert np.array_equal(first[caption], again[caption]) and np.array_equal(
        first[caption], with_others[caption]
    )
    alone = pictures([student(run)], space="edges", joint=True)
    joined = pictures([student(run), str(run / "direct")], space="edges", joint=True)
    assert all(np.array_equal(alone[c], joined[c]) for c in alone)  # the joint basis is the expert's own


def test_the_joint_basis_is_offered_only_where_panels_share_a_feature_space(calls, key, run):
    specs = ["edges", student(run)]
    own = list(calls.explorer.feature_maps(key, specs, SIDE, OWN_SPACE, joint=False))[-1]
    own_joint = list(calls.explorer.feature_maps(key, specs, SIDE, OWN_SPACE, joint=True))[-1]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(own.panels, own_joint.panels, strict=True))
    each = list(calls.explorer.feature_maps(key, specs, SIDE, "edges", joint=False))[-1]
    joint = list(calls.explorer.feature_maps(key, specs, SIDE, "edges", joint=True))[-1]
    assert np.array_equal(each.panels[1].image, joint.panels[1].image)  # the expert: its own basis either way
    assert not np.array_equal(each.panels[2].image, joint.panels[2].image)  # the estimate: in the expert's
    assert Callbacks.joint_offer(OWN_SPACE) == gr.update(value=False, interactive=False)
    assert Callbacks.joint_offer("edges") == gr.update(interactive=True)
    demo = build_app(Explorer(run, display=SIDE))
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "joint")
    assert box.interactive is False  # the app opens in own features


def test_position_mean_is_the_photos_mean_and_is_removed_before_the_pca(calls, key, run):
    spec, explorer = student(run), calls.explorer
    mean = explorer.position_mean(spec, SIDE, OWN_SPACE, None, (4, 4))
    photos = [explorer.load_photo(name) for name in photo_names()[:POSITION_PHOTOS]]
    expected = torch.cat([explorer.cache.features(k, spec, SIDE).patches for k in photos]).mean(
        0, keepdim=True
    )
    torch.testing.assert_close(mean, expected, rtol=1e-4, atol=1e-5)
    grid = explorer.cache.features(key, spec, SIDE).patches
    (panel,) = list(explorer.feature_maps(key, [spec], SIDE, centred=True))[-1].panels[1:]
    colours = pca_colours({"centred": grid - mean})["centred"]
    assert np.array_equal(panel.image, to_picture(upsample(colours, (SIDE, SIDE), False), (SIDE, SIDE)))
    assert explorer.position_mean(spec, SIDE, OWN_SPACE, None, (2, 6)).shape == (1, grid.shape[1], 2, 6)


def test_the_random_floor_is_offered_and_named_by_what_it_is(calls, key, run):
    floor = f"random:{run / 'student'}"
    assert ("tiny/random init (floor)", floor) in calls.explorer.encoder_choices()
    (panel,) = list(calls.explorer.feature_maps(key, [floor], SIDE))[-1].panels[1:]
    scored = random_encoder(run / "student", SIDE)  # the scoreboard's floor: the same weights
    params = sum(p.numel() for p in scored.backbone.model.backbone.parameters()) / 1e6
    assert panel.caption == f"ViT 32x2, {params:.2g}M (random init) · 4x4 patches"  # width x depth, size
    image = calls.explorer.cache.image(key)[None]
    torch.testing.assert_close(calls.explorer.cache.features(key, floor, SIDE).patches, scored(image).patches)


def test_a_distilled_encoder_opens_at_the_side_it_trained_at(run, tmp_path):
    assert RunDir(run).trained_side("multires") == 64  # its pyramid [32, 64]: the largest
    assert trained_side(run / "multires" / "checkpoint") == 64 and trained_side(tmp_path) is None
    assert trained_resolution(["edges", student(run)], 224) == 64
    assert trained_resolution(["edges"], 224) == 224
    demo = build_app(Explorer(run, display=SIDE))
    slider = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "resolution")
    assert slider.value == 64


def test_broken_checkpoints_and_unknown_encoders_are_messages_not_crashes(calls, key, run, tmp_path):
    broken = tmp_path / "broken" / "student"
    shutil.copytree(run / "student", broken)
    (broken / "checkpoint" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(gr.Error, match=r"cannot load encoder '.*broken/student'"):
        calls.add_encoders(str(broken), ["edges"], [])
    with pytest.raises(gr.Error, match="cannot load encoder 'no-such-model'"):
        calls.add_encoders("no-such-model", ["edges"], [])
    gallery, notes = list(
        calls.feature_maps(key, ["edges", str(broken)], SIDE, OWN_SPACE, False, False, 0.0)
    )[-1]
    assert len(gallery) == 2 and f"cannot load encoder '{broken}'" in notes  # the others still show
    checkboxes, *_, extra, typed = calls.add_encoders("timm:test_vit", ["edges"], [])
    assert checkboxes["value"] == ["edges", "timm:test_vit"] and extra == ["timm:test_vit"] and typed == ""


def test_every_recomputing_event_runs_the_last_change_in_order(run):
    """Gradio's default trigger mode drops a change made while its event runs; every event here runs the
    last one after it, each view's events share one queue, the resolution applies as it changes, and the
    galleries keep their columns however many panels have arrived."""
    demo = build_app(Explorer(run, display=SIDE))
    blocks = {block._id: block for block in demo.blocks.values()}
    galleries = [block for block in blocks.values() if isinstance(block, gr.Gallery)]
    assert galleries and all(g.fit_columns is False for g in galleries)
    gallery_ids = {g._id for g in galleries}
    views = [f for f in demo.fns.values() if gallery_ids & {o._id for o in f.outputs}]
    assert len(views) >= 10 and all(f.trigger_mode == "always_last" for f in views)
    queues = {"feature_maps", "similarity", "probes", "teacher_student", "matches", "segments"}
    assert {f.concurrency_id for f in views} == queues
    resolution = next(b for b in blocks.values() if getattr(b, "elem_id", None) == "resolution")
    assert any((resolution._id, "change") in f.targets for f in views)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_api_round_trip_survives_a_bad_upload(run, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    demo = serve(build_app(Explorer(run, display=SIDE)), port=free_port(), block=False)
    try:
        assert demo.server_name == "127.0.0.1"
        client = Client(demo.local_url, verbose=False)
        bad = tmp_path / "table.csv"
        bad.write_text("a,b\n1,2\n")
        with pytest.raises(AppError, match=r"cannot identify image file|not a readable image"):
            client.predict(handle_file(str(bad)), api_name="/load_upload")
        client.predict("coffee", api_name="/load_photo")  # the app is still alive, in the same session
        gallery, notes = client.predict(["edges"], SIDE, OWN_SPACE, False, False, 0, api_name="/feature_maps")
        assert [item["caption"] for item in gallery] == ["input", "edges · 8x8 patches"]
        assert notes.startswith("1 of 1 encoders")
    finally:
        demo.close()


def test_teachers_show_opens_students_at_the_side_they_trained_at(run, tmp_path, monkeypatch):
    from apps.cli import main
    from workbench.viz import pca_figures

    seen: dict = {}

    def record(encoders: dict, images: dict, path: Path, students: dict) -> Path:
        seen.update(sides={image.shape[-1] for image in images.values()}, students=students)
        return path

    monkeypatch.setattr(pca_figures, "pca_grid_figure", record)
    out = str(tmp_path / "s.png")
    command = ["teachers", "show", "--teachers", "edges", "--photos", "coffee", "--out", out]
    main([*command, "--students", student(run)])
    assert seen["sides"] == {64} and seen["students"]["tiny/multires"].resolution == 64
    main([*command, "--students", student(run), "--resolution", "96"])  # unless the user picks another
    assert seen["sides"] == {96} and seen["students"]["tiny/multires"].resolution == 96
    main([*command, "--students", student(run), "--floor"])  # the random floor, drawn as the scoreboard's
    floor = next(s for name, s in seen["students"].items() if name.endswith("(random init)"))
    assert floor.kind == "random" and floor.resolution == 64 and floor.experts() == []
    with pytest.raises(SystemExit, match="--floor draws the random floor of the last --students stage"):
        main([*command, "--floor"])


def test_a_picture_shown_again_is_never_rewritten(calls, key, run):
    # Gradio rewrote the file of an array picture whenever an output held it again (a streamed gallery
    # re-sends its earlier pictures), breaking a browser's fetch of it mid-way: pictures are files now,
    # named by content and written once, which Gradio copies into its cache once.
    specs = ["edges", student(run)]
    first, last = (g for g, _ in list(calls.feature_maps(key, specs, SIDE, OWN_SPACE, False, False, 0.0)))
    assert [p for p, _ in first] == [p for p, _ in last[:2]]  # the streamed input and edges map: same files
    stats = {path: Path(path).stat() for path, _ in last}
    again, _ = list(calls.feature_maps(key, specs, SIDE, OWN_SPACE, False, False, 0.0))[-1]
    for path, _ in again:
        now = Path(path).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stats[path].st_ino, stats[path].st_mtime_ns)
    pictures = [picture for picture, _ in gallery_arrays(again)]
    assert all(p.dtype == np.uint8 and p.shape == (SIDE, SIDE, 3) for p in pictures)
    assert not np.array_equal(pictures[0], pictures[1])  # the input and the map: different files
