"""Per-token monitoring helpers shared by ``infer``, the dashboard and the live chat."""
