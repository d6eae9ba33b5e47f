"""What a run reports: per-worker stats, the map progress bar, the profile of a
function and the recommendation drawn from it. Sinks fed by the layers above."""
