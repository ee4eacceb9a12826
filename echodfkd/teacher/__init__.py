"""Teachers: the models or cached outputs whose soft masks the student learns from.

One module per concern (import what you need; this package imports nothing itself):

- :mod:`~echodfkd.teacher.archs`: architectures and their input preprocessing;
- :mod:`~echodfkd.teacher.checkpoint`: project / EchoNet-Dynamic checkpoints, strict loading;
- :mod:`~echodfkd.teacher.model`: a loaded network giving probabilities (CPU, CUDA + AMP);
- :mod:`~echodfkd.teacher.outputs`: imported per-video outputs (``.seg.npz`` / ``.npy``);
- :mod:`~echodfkd.teacher.fusion`: weighted fusion of members;
- :mod:`~echodfkd.teacher.members`: member kinds (one registry) and ``teacher.json``;
- :mod:`~echodfkd.teacher.infer`: resumable inference into a mask store (dask);
- :mod:`~echodfkd.teacher.build`: the teacher stage's directory builder;
- :mod:`~echodfkd.teacher.fit`: fitting the light UNet (imported by ``build`` only).
"""
