"""Training curves drawn in the terminal with plotext: the loss per epoch, and valid MRR per branch and fused.

The input is :func:`imf_cli.runs.trace_series`; each plot is returned as a rich ``Text`` (plotext's
ANSI colours kept when ``colour``), so ``imf runs show`` prints it like any other renderable.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

#: Plot colours of the scores, as plotext names them.
COLOURS = {"structure": "blue", "visual": "magenta", "text": "green", "multimodal": "yellow", "fused": "white"}
HEIGHT = 14
#: A loss whose largest value is this many times its smallest is drawn on a log axis.
LOG_SPAN = 10


def _figure(width: int, height: int, title: str, colour: bool):
    """plotext's figure, cleared and sized, with a theme without a background (or without colour)."""
    import plotext

    figure = plotext.figure
    figure.clear()
    figure.theme("simple" if colour else "colorless")
    figure.plot_size(width, height)
    figure.title(title)
    figure.label("epoch", axis=0)
    return figure


def _line(figure, xs: list, ys: list, label: str, colour: str) -> None:
    import plotext

    marker = plotext.marker("braille", pixel=plotext.pixel(foreground=colour))
    signal = figure.signal(xs, ys, marker=marker)
    signal.label(label)
    signal.lines()
    figure.draw(signal)


def _title(title: str, best_epoch: int | None) -> str:
    return f"{title}; best.pt is epoch {best_epoch}" if best_epoch else title


def training_plots(
    series: dict[str, Any], *, width: int = 80, colour: bool = True, best_epoch: int | None = None
) -> list[Text]:
    """The loss plot, and the valid MRR plot when the run was evaluated; titles name the best epoch."""
    plots = []
    points = [(epoch, loss) for epoch, loss in zip(series["epochs"], series["loss"]) if loss is not None]
    if points:
        losses = [v for _, v in points]
        # The loss falls by orders of magnitude in the first epochs: on a linear axis the rest is flat.
        log = min(losses) > 0 and max(losses) >= LOG_SPAN * min(losses)
        title = "training loss per epoch" + (" (log scale)" if log else "")
        figure = _figure(width, HEIGHT, _title(title, best_epoch), colour)
        if log:
            figure.ruler("y").scale("log")
        _line(figure, [e for e, _ in points], [v for _, v in points], "loss", "cyan")
        plots.append(Text.from_ansi(str(figure.build())))
    if series["valid_epochs"]:
        figure = _figure(width, HEIGHT + 4, _title("valid MRR, filtered with train + valid", best_epoch), colour)
        scores = series["valid"]
        if len(scores) == 2 and "fused" in scores:  # one branch: its fused curve is the same line
            scores = {score: values for score, values in scores.items() if score != "fused"}
        for score, values in scores.items():
            pairs = [(e, v) for e, v in zip(series["valid_epochs"], values) if v is not None]
            if pairs:
                _line(figure, [e for e, _ in pairs], [v for _, v in pairs], score, COLOURS.get(score, "cyan"))
        plots.append(Text.from_ansi(str(figure.build())))
    return plots
