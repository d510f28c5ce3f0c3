"""A train step's parts: state, optimizer, losses, eval, teacher, mesh."""
