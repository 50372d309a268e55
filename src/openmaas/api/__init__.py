"""HTTP adapters: the only package (with app.py) that imports the web framework."""
