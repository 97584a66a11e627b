"""Training schemes beyond one teacher and one student."""
