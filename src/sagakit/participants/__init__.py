"""The checkout's participants as separate services, and the steps that call them over HTTP.

``service.py`` builds one participant's FastAPI app (payment, inventory or shipping) over
its own database; ``http.py`` is the transport the checkout service uses to reach them.
"""
