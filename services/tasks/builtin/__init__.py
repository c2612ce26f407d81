"""Herald's built-in tasks; each module registers its tasks with `@task` on import."""
