"""The flask-plurality sample app: ``python -m examples.app`` (or ``python3 dev.py demo``)."""
