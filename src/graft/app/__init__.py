"""``graft app``: a local web app over the recipes for people who do not type commands.

Open a project (a folder of class folders under ``--root``), look at its photos, train with
``graft fit``'s defaults (a real run folder, written by the recipe registry in a child process:
:mod:`graft.app.training`), read the validation accuracy and the report, try the model on a
photo (:class:`graft.inference.Predictor`), export it to ONNX (the export registry) with the
command shown. Binds 127.0.0.1; a random token in the printed URL (as Jupyter's) guards every
request. Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart).
"""
