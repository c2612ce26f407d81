"""An example task module: name it in config.toml (`[tasks] modules = [...]`)."""

from services.tasks import Param, ParamType, task


@task("text.count_words", title="Count words",
      params=[Param("text", ParamType.STRING, description="Any text")])
def count_words(ctx, text):
    words = text.split()
    for i, _ in enumerate(words):
        ctx.progress((i + 1) / len(words), f"word {i + 1} of {len(words)}")
    return {"words": len(words)}
