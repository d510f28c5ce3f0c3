"""What a train step computes with: state and optimizer, losses, evaluation, teacher, mesh."""
