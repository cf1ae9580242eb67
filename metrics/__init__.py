"""Challenge metrics, computed exactly as the organisers compute them."""
