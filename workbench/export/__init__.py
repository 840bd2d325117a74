"""Exports of an encoder, each checked: an ONNX file (`onnx_file`), a timm model folder (`timm_folder`) with
its expert heads (`heads`) and model card (`model_card`); `input_check` is the check every export gets, and
`checked.export_and_check` does all of it, as `eupe export` does.

Nothing is imported here: `workbench.eval.encoders` reads the heads file, and onnxruntime is an extra."""

FORMATS = ("timm", "onnx")  # what `export_and_check` writes: a timm model folder or an ONNX file
