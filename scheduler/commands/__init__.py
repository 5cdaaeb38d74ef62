"""Sub-commands of the `ad-scheduler` CLI that live in their own modules (each has `register`)."""
