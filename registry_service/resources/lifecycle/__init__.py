"""Model lifecycle: stage and alias history, rollback, retention."""
