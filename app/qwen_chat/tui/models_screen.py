"""The models screen: the Qwen3 catalog with this machine's verdict per quant, the planner's pick starred, then
the GGUF files on this disk that are not in the catalog (models folder, Hugging Face cache: hub/local_models.py);
Enter on any downloaded one loads it in place of the model in use, the conversation staying."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from qwen_chat.catalog.entries import CatalogError, CatalogModel
from qwen_chat.catalog.loader import load_models
from qwen_chat.hub.local_models import LocalGguf, find_local_ggufs
from qwen_chat.planning.calibration import rates_for
from qwen_chat.planning.speed import DISPLAY_CTX, Rates, predict, workload_from_catalog
from qwen_chat.planning.verdicts import QuantVerdict, verdicts
from qwen_chat.system.hardware import detect
from qwen_chat.system.paths import models_dir
from qwen_chat.tui.printable import printable, printable_line

_STYLE = {"runs fully on GPU": "green", "runs partly on GPU": "yellow", "CPU only": "cyan", "too big": "red"}


_COLUMNS = ("", "model", "quant", "size", "verdict", "speed", "context")


def _speed(model: CatalogModel, row: QuantVerdict, rates: Rates) -> str:
    """The expected decode speed, "~12 tok/s" (planning/speed.py); only for rows with a plan."""
    assert row.plan is not None
    return predict(workload_from_catalog(model, row.quant), row.plan, rates).short()


def _local_cells(found: LocalGguf) -> tuple[Text, ...]:
    """A file on disk outside the catalog, by its file name (two folders may hold the same model): downloaded
    (✓), and where it is in place of a verdict (the catalog has no sizes for it to plan with)."""
    where = "not in catalog" + (" · HF cache" if found.in_hf_cache else "")
    short = (found.problem or "").split(":")[0].split(" (")[0]  # the whole reason comes with Enter
    verdict = Text(printable_line(short), style="red") if found.problem else Text(where, style="cyan")
    return (Text(" ✓"), Text(printable_line(found.path.name)), Text(printable_line(found.quant)),
            Text(f"{found.size / 1e9:.1f} GB"), verdict, Text(""), Text(""))


class ModelsScreen(ModalScreen[Path | None]):
    """Dismisses with the path of a downloaded model to load, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]  # Enter: load if downloaded, else download

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, tuple[str, QuantVerdict]] = {}
        self._local: dict[str, LocalGguf] = {}  # "local:PATH" -> a GGUF on disk that is not in the catalog

    def compose(self) -> ComposeResult:
        with Vertical(classes="models-dialog"):
            yield Label("Models · ★ recommended · ✓ on disk · Enter loads or downloads · Esc closes",
                        id="models-title", markup=False)
            yield Label("Checking this machine…", id="machine", markup=False)
            yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*_COLUMNS)
        self._fill()

    @work(thread=True, exit_on_error=False)
    def _fill(self) -> None:
        try:
            machine = detect()
            rates = rates_for(machine)
            rows = [(model, *verdicts(model, machine)) for model in load_models().values()]
            speeds = {f"{model.id}:{r.quant.name}": _speed(model, r, rates) for model, quant_rows, _ in rows
                      for r in quant_rows if r.plan}
            local = [found for found in find_local_ggufs() if not found.in_catalog]
        except CatalogError as exc:  # the message `qwen-chat models` prints: file, line and key
            self.app.call_from_thread(self._failed, str(exc))
            return
        except Exception as exc:  # anything else would die silently in this worker, leaving "Checking…" up
            self.app.call_from_thread(self._failed, f"The models could not be listed: {exc}")
            raise
        gpus = ", ".join(d.description for d in machine.gpus) or "no GPU"
        line = (f"{machine.ram_available / (1 << 30):.1f} GiB RAM free · {gpus}"
                + (" (CPU-only llama.cpp build)" if machine.gpus and not machine.gpu_offload else "")
                + f" · speed at {DISPLAY_CTX:,} tokens of context "
                + ("measured" if rates.measured else "estimated, not measured (qwen-chat calibrate)"))
        self.app.call_from_thread(self._show, line, rows, speeds, local)

    def _failed(self, message: str) -> None:
        """Said on the screen, where the user is looking, and as a notification; the table stays empty."""
        self.query_one("#machine", Label).update(Text(printable(message), style="bold red"))
        self.app.notify(printable(message), severity="error", timeout=10, markup=False)

    def _show(self, machine_line: str, rows: list, speeds: dict[str, str], local: list[LocalGguf]) -> None:
        self.query_one("#machine", Label).update(Text(printable_line(machine_line)))
        table = self.query_one(DataTable)
        cells: list[tuple[str, tuple[Text, ...]]] = []
        self._local = {f"local:{found.path}": found for found in local}
        for model, quant_rows, best in rows:
            for row in quant_rows:
                star = row.quant.name == best
                style = "bold" if star else ""
                mark = ("★" if star else " ") + ("✓" if row.downloaded else " ")
                size = f"{'~' if row.quant.estimated else ''}{row.quant.size / 1e9:.1f} GB"
                ctx = f"{row.plan.n_ctx:,}" if row.plan else ""
                key = f"{model.id}:{row.quant.name}"
                self._rows[key] = (model.id, row)
                cells.append((key, (Text(mark), Text(printable_line(model.id), style=style),
                                    Text(printable_line(row.quant.name), style=style),
                                    Text(size), Text(row.verdict, style=_STYLE.get(row.verdict, "")),
                                    Text(speeds.get(key, "")), Text(ctx))))
        cells += [(key, _local_cells(found)) for key, found in self._local.items()]
        # Fixed widths, known before any row is drawn: DataTable widens auto columns on a later idle pass and
        # keeps row renders cached from before it, so the first row could stay drawn with the header widths.
        widths = [max([len(title)] + [c[i].cell_len for _, c in cells]) for i, title in enumerate(_COLUMNS)]
        table.clear(columns=True)
        for title, width in zip(_COLUMNS, widths, strict=True):
            table.add_column(title, width=width)
        for key, row_cells in cells:
            table.add_row(*row_cells, key=key)

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        local = self._local.get(str(event.row_key.value))
        if local is not None:
            if local.problem:
                self.app.notify(f"{local.path.name}: {local.problem}", severity="error", timeout=8)
            else:
                self.dismiss(local.path)
            return
        model_id, row = self._rows[str(event.row_key.value)]
        if not row.downloaded:
            queue = getattr(self.app, "downloads", None)
            if queue is None:
                return
            try:
                queue.add(f"{model_id}:{row.quant.name}")
            except CatalogError as exc:
                self.app.notify(printable(str(exc)), severity="error", markup=False)
                return
            self.app.notify(f"Downloading {model_id}:{row.quant.name} ({row.quant.size / 1e9:.1f} GB): F4 shows "
                            "progress; Enter on it here once it is done loads it.", timeout=8)
            return
        self.dismiss(models_dir() / Path(row.quant.files[0].path).name)


class EndpointModelsScreen(ModalScreen[str | None]):
    """The models an OpenAI-compatible endpoint serves (`/v1/models`); Enter switches to one."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, url: str, api_key: str | None) -> None:
        super().__init__()
        self.url, self.api_key = url, api_key

    def compose(self) -> ComposeResult:
        with Vertical(classes="models-dialog"):
            yield Label(printable_line(f"Models served by {self.url} (Enter switches, Esc closes)"), markup=False)
            yield DataTable(id="endpoint-models", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("model", "context", "owned by")
        self._fill()

    @work(thread=True, exit_on_error=False)
    def _fill(self) -> None:
        from qwen_chat.engines.http import EndpointError, list_models

        try:
            models = list_models(self.url, self.api_key)
        except EndpointError as exc:
            self.app.call_from_thread(self.app.notify, printable(str(exc)), severity="error", timeout=10,
                                      markup=False)
            return
        self.app.call_from_thread(self._show, models)

    def _show(self, models: list[dict]) -> None:
        table = self.query_one(DataTable)
        for m in models:
            ctx = m.get("max_model_len") or m.get("meta", {}).get("n_ctx_train") or ""
            # a server's answer is as untrusted as a file: nothing in it reaches the terminal raw
            table.add_row(Text(printable_line(str(m.get("id")))),
                          Text(f"{ctx:,}" if isinstance(ctx, int) else printable_line(str(ctx))),
                          Text(printable_line(str(m.get("owned_by", "")))), key=str(m.get("id")))

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        self.dismiss(str(event.row_key.value))
