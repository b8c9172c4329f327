"""What a worker exposes: scrape-time Prometheus collectors and the web endpoints that serve them."""
