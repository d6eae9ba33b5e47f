"""``@mc.task`` graphs: task futures, definitions, dispatch through the
scheduler's door, graph drawing and graph progress."""
