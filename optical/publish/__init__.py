"""Publishing a trained student: its model card (card.py) and the upload to the Hub (hub.py)."""
