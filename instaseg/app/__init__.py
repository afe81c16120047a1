"""Serving a trained model: the Gradio demo (:mod:`.gradio_app`), the Label Studio ML backend
(:mod:`.ls_backend`, protocol in :mod:`.ls_protocol`), and a small Label Studio API client
(:mod:`.ls_client`) used by the backend and by ``instaseg pull-label-studio`` (:mod:`.pull`).

Only :mod:`.ls_protocol`, :mod:`.ls_client` and :mod:`.pull` import without the ``app`` extra (gradio).
"""
