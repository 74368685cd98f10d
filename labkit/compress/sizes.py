"""Where the bytes of a stored model go: by layer and by part (header, gaps, indices, codebook, bias …)."""

from __future__ import annotations

from dataclasses import dataclass

from labkit.i18n import tr


@dataclass(frozen=True)
class SizeReport:
    """Bytes of a blob by layer and part, and the ratio to the reference model stored as dense float32."""

    rows: tuple[tuple[str, str, int], ...]  # (layer, part, bytes); the layer "(model)" is the file header
    total: int  # len(blob): the rows add up to it exactly
    dense_bytes: int  # 4 bytes for every parameter of the reference model

    @property
    def ratio(self) -> float:
        """How many times smaller than the dense float32 model."""
        return self.dense_bytes / self.total

    def by_part(self) -> dict[str, int]:
        """Bytes per part, summed over the layers."""
        out: dict[str, int] = {}
        for _, part, n in self.rows:
            out[part] = out.get(part, 0) + n
        return out

    def by_layer(self) -> dict[str, dict[str, int]]:
        """{layer: {part: bytes}}."""
        out: dict[str, dict[str, int]] = {}
        for layer, part, n in self.rows:
            out.setdefault(layer, {})
            out[layer][part] = out[layer].get(part, 0) + n
        return out

    def table(self) -> str:
        """A Markdown table: one row per layer, one column per part, in bytes (headers in the current language)."""
        parts = list(self.by_part())
        names = {
            "header": tr("header"),
            "codebook": tr("codebook"),
            "scales": tr("scales"),
            "huffman tables": tr("huffman tables"),
            "indices": tr("indices"),
            "weights": tr("weights"),
            "bias": tr("bias"),
        }
        head = " | ".join(names.get(p, p) for p in parts)
        lines = [f"| {tr('layer')} | {head} | {tr('total')} |", "|---" * (len(parts) + 2) + "|"]
        for layer, row in self.by_layer().items():
            shown = tr("(model)") if layer == "(model)" else layer
            lines.append(
                f"| {shown} | " + " | ".join(f"{row.get(p, 0):,}" for p in parts) + f" | {sum(row.values()):,} |"
            )
        lines.append(f"| {tr('all')} | {' | '.join(f'{v:,}' for v in self.by_part().values())} | {self.total:,} |")
        dense = tr("Dense float32: {n:,} bytes; {ratio:.1f}× smaller.", n=self.dense_bytes, ratio=self.ratio)
        return "\n".join(lines) + "\n\n" + dense
