"""The models screen: the Qwen3 catalog with this machine's verdict per quant, the planner's pick starred, then
the GGUF files on this disk that are not in the catalog (models folder, Hugging Face cache: hub/local_models.py);
Enter on any downloaded one loads it in place of the model in use, the conversation staying. Under the table, the
draft model speculative decoding would use beside the highlighted quant (planning/draft_choice.py), the download
that would give it one, or why it gets none."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label
from textual.worker import get_current_worker

from qwen_chat.catalog.entries import CatalogError, CatalogModel
from qwen_chat.catalog.loader import load_models
from qwen_chat.config.engine_settings import estimate_threads
from qwen_chat.hub.local_models import LocalGguf, find_local_ggufs
from qwen_chat.planning.calibration import rates_for
from qwen_chat.planning.draft_choice import MIN_TARGET_PARAMS, DraftChoice, draft_for_catalog, target_from_catalog
from qwen_chat.planning.planner import Plan
from qwen_chat.planning.speed import DISPLAY_CTX, Rates, predict, workload_from_catalog
from qwen_chat.planning.verdicts import QuantVerdict, verdicts
from qwen_chat.system.hardware import Machine, detect
from qwen_chat.system.paths import models_dir
from qwen_chat.tui.printable import printable, printable_line

log = logging.getLogger(__name__)

_STYLE = {"runs fully on GPU": "green", "runs partly on GPU": "yellow", "CPU only": "cyan", "too big": "red"}


_COLUMNS = ("", "model", "quant", "size", "verdict", "speed", "context")
DRAFT_PREFIX = "Draft for speculative decoding: "
_DRAFT_MAX = 170  # characters: two lines of the 100-column dialog (94 inside), with room for wrapping


def draft_line(model: CatalogModel, chosen: Plan, choice: DraftChoice) -> str:
    """The line under the table for a catalog quant planned as `chosen`: the draft on disk that would load beside
    it, else the catalog quant to download (named as its row shows it), else why none, kept to two lines
    (`qwen-chat plan` gives the whole reason and the draft's memory)."""
    target = target_from_catalog(model)
    if choice.option is not None:
        where = "on the GPU" if choice.on_gpu else "on the CPU"
        shorter = (f", drafting while the conversation is under {choice.n_ctx:,} tokens"
                   if choice.n_ctx < chosen.n_ctx else "")
        text = f"{choice.option.name} (on disk, {choice.option.size / 1e9:.1f} GB) {where}{shorter}"
    elif choice.offer is not None and choice.offer.ref:
        model_id, _, quant = choice.offer.ref.rpartition(":")
        text = (f"none usable on disk; {model_id} {quant} ({choice.offer.size / 1e9:.1f} GB) would fit beside it: "
                "select its row and press Enter to download it")
    elif target.recurrent:
        text = (f"none, {model.name} is a hybrid recurrent model: llama-cpp-python 0.3.36 cannot roll its state "
                "back after a rejected draft")
    elif target.params < MIN_TARGET_PARAMS:
        text = f"none, a draft model pays for models of 4B and up ({model.name} has {model.params / 1e9:.1f}B)"
    else:  # no room beside it, or the files on disk do not do
        text = f"none: {choice.reason}"
    text = DRAFT_PREFIX + text
    if len(text) <= _DRAFT_MAX:
        return text
    more = f"… (qwen-chat plan {model.id}:{chosen.quant} says more)"
    return text[:_DRAFT_MAX - len(more)].rstrip() + more


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
    DEFAULT_CSS = "ModelsScreen #draft-line { height: 2; width: 100%; color: $text-muted; }"  # steady: no jumps

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, tuple[CatalogModel, QuantVerdict]] = {}
        self._local: dict[str, LocalGguf] = {}  # "local:PATH" -> a GGUF on disk that is not in the catalog
        self._planned: tuple[Machine, dict[str, CatalogModel]] | None = None  # what the drafts are chosen with
        self._drafts: dict[str, str] = {}  # row key -> its draft line, worked out once per screen
        self._highlighted = ""  # the row key the draft line is for

    def compose(self) -> ComposeResult:
        with Vertical(classes="models-dialog"):
            yield Label("Models · ★ recommended · ✓ on disk · Enter loads or downloads · Esc closes",
                        id="models-title", markup=False)
            yield Label("Checking this machine…", id="machine", markup=False)
            yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
            yield Label("", id="draft-line", markup=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*_COLUMNS)
        self._fill()

    @work(thread=True, exit_on_error=False)
    def _fill(self) -> None:
        try:
            machine = detect()
            rates = rates_for(machine, estimate_threads())
            models = load_models()
            rows = [(model, *verdicts(model, machine)) for model in models.values()]
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
        self._planned = (machine, models)  # set before the rows are shown: their highlight reads it
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
                self._rows[key] = (model, row)
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
        model, row = self._rows[str(event.row_key.value)]
        if not row.downloaded:
            queue = getattr(self.app, "downloads", None)
            if queue is None:
                return
            try:
                queue.add(f"{model.id}:{row.quant.name}")
            except CatalogError as exc:
                self.app.notify(printable(str(exc)), severity="error", markup=False)
                return
            self.app.notify(f"Downloading {model.id}:{row.quant.name} ({row.quant.size / 1e9:.1f} GB): F4 shows "
                            "progress; Enter on it here once it is done loads it.", timeout=8)
            return
        self.dismiss(models_dir() / Path(row.quant.files[0].path).name)

    @on(DataTable.RowHighlighted)
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        """The draft line follows the cursor; a row without a plan (too big, a file outside the catalog) has none."""
        key = str(event.row_key.value)
        self._highlighted = key
        found = self._rows.get(key)
        if found is None or found[1].plan is None or self._planned is None:
            self._show_draft(key, "")
        elif key in self._drafts:
            self._show_draft(key, self._drafts[key])
        else:
            self._show_draft(key, DRAFT_PREFIX + "looking in the models folder…")
            self._find_draft(key, *found, *self._planned)

    @work(thread=True, exclusive=True, group="draft", exit_on_error=False)
    def _find_draft(self, key: str, model: CatalogModel, row: QuantVerdict, machine: Machine,
                    models: dict[str, CatalogModel]) -> None:
        """Off the UI thread: the choice reads the GGUF headers of the small files in the models folder."""
        assert row.plan is not None
        try:
            line = draft_line(model, row.plan, draft_for_catalog(model, row.plan, machine, models))
        except Exception as exc:  # the line says so; the screen and its table go on working
            line = DRAFT_PREFIX + f"could not be worked out: {exc}"
            log.exception("choosing the draft model for %s", key)
        if not get_current_worker().is_cancelled:  # cancelled: the screen closed or another row took over
            self.app.call_from_thread(self._keep_draft, key, line)

    def _keep_draft(self, key: str, line: str) -> None:
        self._drafts[key] = line
        self._show_draft(key, line)

    def _show_draft(self, key: str, line: str) -> None:
        if key == self._highlighted and self.is_attached:
            self.query_one("#draft-line", Label).update(Text(printable(line)))


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
