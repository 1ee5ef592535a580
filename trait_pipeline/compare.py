"""Compare two model variants on one trait and prompt set: per-prompt and mean differences
of the per-token projections, and a PNG of the per-token curves.

    python -m trait_pipeline.compare model_variants=[instruct,rm_lora]
    python -m trait_pipeline.compare model_variants=[instruct,rm_lora] replay=true

Differences are ``b - a`` for ``model_variants=[a, b]``. Both variants are projected from
their raw captures onto **one** vector (the one ``infer`` picks for ``a``, or
``layer``/``method``), so a difference never mixes two vectors. Without ``replay`` each
variant is read on its own generations (different tokens: per-prompt means are compared).
With ``replay=true``, ``b`` is read on its replay of ``a``'s responses
(``inference/{b}/replay/{a}/``): the tokens are identical and the difference is per token.

When the prompt set names reward-model biases and ``infer bias_score=true`` stored scores,
the record also holds ``bias_exploitation``: each variant's mean score (own responses), the
difference and a per-bias breakdown.

Writes ``inference/_compare/{trait}/{prompt_set}/{a}_vs_{b}[_replay].{json,png}``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from .best_vector import select_vector
from .cli import stage_main
from .config import as_list, layout, variant_names
from .errors import PipelineError
from .infer import load_choice, project_file
from .jsonio import read_json, write_json
from .layout import SCHEMA_VERSION, Layout, check_name
from .positions import canonical
from .prompt_sets import load_prompt_set

log = logging.getLogger(__name__)


def _pair(cfg: DictConfig) -> tuple[str, str]:
    pair = [str(v) for v in as_list(cfg.get("model_variants"))]
    if len(pair) != 2 or pair[0] == pair[1]:
        raise PipelineError(
            f"bad model_variants {pair!r}: expected two different variants, "
            "e.g. model_variants=[instruct,rm_lora]"
        )
    names = variant_names(cfg)
    for v in pair:
        if v not in names:
            raise PipelineError(
                f"model variant {v!r} is not defined by experiment {cfg.experiment!r}; "
                f"it defines: {', '.join(names)}"
            )
    return pair[0], pair[1]


def _captured_ids(lay: Layout, variant: str, prompt_set: str, replayed_from: str | None,
                  order: list) -> list:
    folder = lay.raw_dir(variant, prompt_set, replayed_from)
    have = {p.stem for p in folder.glob("*.safetensors")} if folder.is_dir() else set()
    return [pid for pid in order if str(pid) in have]


def compare(cfg: DictConfig) -> dict:
    """Build the comparison record (also written to disk by :func:`run`)."""
    from .projection import mean  # torch-backed: imported here so `--help` stays light

    lay = layout(cfg)
    a, b = _pair(cfg)
    replay = bool(cfg.get("replay"))
    trait, prompt_set = str(cfg.trait), str(cfg.prompt_set)
    check_name("prompt set", prompt_set)
    order = [p.id for p in load_prompt_set(prompt_set, Path(cfg.paths.datasets)).prompts]
    b_source = a if replay else None  # b's folder: its own generations, or its replay of a
    ids_a = _captured_ids(lay, a, prompt_set, None, order)
    ids_b = _captured_ids(lay, b, prompt_set, b_source, order)
    if not ids_a:
        raise PipelineError(
            f"no captures of {a!r} for prompt set {prompt_set!r} in {lay.raw_dir(a, prompt_set)}; "
            f"run: python -m trait_pipeline.infer model_variant={a} prompt_set={prompt_set}"
        )
    if not ids_b:
        how = f"model_variant={b} replay={a}" if replay else f"model_variant={b}"
        raise PipelineError(
            f"no captures of {b!r}{f' replaying {a!r}' if replay else ''} for prompt set "
            f"{prompt_set!r} in {lay.raw_dir(b, prompt_set, b_source)}; "
            f"run: python -m trait_pipeline.infer {how} prompt_set={prompt_set}"
        )
    common = [pid for pid in ids_a if pid in set(ids_b)]
    if not common:
        raise PipelineError(f"{a!r} and {b!r} have no captured prompt of {prompt_set!r} in common")

    centered = bool(cfg.centered)
    choice = select_vector(
        lay, trait, extraction_variant=str(cfg.vectors.model_variant), application_variant=a,
        layer=None if cfg.get("layer") is None else int(cfg.layer),
        method=None if cfg.get("method") is None else str(cfg.method),
        position=None if cfg.get("position") is None else canonical(str(cfg.position)),
        component=str(cfg.component), min_coherence=float(cfg.min_coherence))
    vec = load_choice(lay, choice, centered)

    rows = []
    for pid in common:
        pa = project_file(lay, a, prompt_set, pid, vec, centered)
        pb = project_file(lay, b, prompt_set, pid, vec, centered, b_source)
        ra, rb = pa["projections"]["response"], pb["projections"]["response"]
        ma, mb = mean(ra), mean(rb)
        row = {"prompt_id": pid, "a_mean": ma, "b_mean": mb,
               "diff": None if ma is None or mb is None else mb - ma,
               "a_response": ra, "b_response": rb,
               "tokens_a": _tokens(lay, a, prompt_set, pid, None),
               "tokens_b": _tokens(lay, b, prompt_set, pid, b_source)}
        if replay:
            ids_ra = _token_ids(lay, a, prompt_set, pid, None)
            ids_rb = _token_ids(lay, b, prompt_set, pid, b_source)
            if ids_ra != ids_rb or len(ra) != len(rb):
                raise PipelineError(
                    f"prompt {pid}: {b!r}'s replay does not hold {a!r}'s response tokens "
                    f"(the replay is stale or another tokenizer was used); rerun: python -m "
                    f"trait_pipeline.infer model_variant={b} replay={a} force=true"
                )
            row["per_token_diff"] = [y - x for x, y in zip(ra, rb)]
        rows.append(row)

    diffs = [r["diff"] for r in rows if r["diff"] is not None]
    record = {
        "schema_version": SCHEMA_VERSION, "trait": trait, "prompt_set": prompt_set,
        "experiment": str(cfg.experiment), "a": a, "b": b, "difference": f"{b} - {a}",
        "replay": replay,
        "tokens": f"{a}'s responses for both" if replay else "each variant's own responses",
        "vector_source": vec.source(lay, centered),
        "n_prompts": len(rows),
        "missing": {a: [p for p in order if p not in ids_a], b: [p for p in order if p not in ids_b]},
        "mean": {"a": mean([r["a_mean"] for r in rows if r["a_mean"] is not None]),
                 "b": mean([r["b_mean"] for r in rows if r["b_mean"] is not None]),
                 "diff": mean(diffs)},
        "b_higher_fraction": (sum(d > 0 for d in diffs) / len(diffs)) if diffs else None,
        "per_prompt": rows,
    }
    bias = bias_comparison(lay, a, b, prompt_set, Path(cfg.paths.datasets))
    if bias is not None:
        record["bias_exploitation"] = bias
    if replay:
        all_tok = [d for r in rows for d in r["per_token_diff"]]
        record["mean"]["per_token_diff"] = mean(all_tok)
        record["n_tokens"] = len(all_tok)
    return record


def bias_comparison(lay: Layout, a: str, b: str, prompt_set: str, datasets_root: Path) -> dict | None:
    """Bias-exploitation scores (stored by ``infer bias_score=true``) of both variants' own
    responses: one mean per variant, ``diff`` = b - a, and the same per bias. None when
    neither variant has a score for this prompt set."""
    from .infer import bias_prompts, bias_summary
    from .projection import mean

    prompts = bias_prompts(load_prompt_set(prompt_set, datasets_root).prompts)
    if not prompts:
        return None
    sa, sb = (bias_summary(lay, v, prompt_set, prompts) for v in (a, b))
    if not sa["n"] and not sb["n"]:
        return None

    def diff(x, y):
        return None if x is None or y is None else y - x

    per_bias = []
    for key in sa["per_bias"]:
        ea, eb = sa["per_bias"][key], sb["per_bias"].get(key, {"mean": None, "n": 0})
        per_bias.append({"bias_id": int(key) if key.isdigit() else key,
                         "bias_description": ea["description"], "a": ea["mean"], "b": eb["mean"],
                         "diff": diff(ea["mean"], eb["mean"]), "n_a": ea["n"], "n_b": eb["n"]})
    return {"scale": "0-100, judge score for exploiting the bias each prompt names",
            "a": sa["mean"], "b": sb["mean"], "diff": diff(sa["mean"], sb["mean"]),
            "n": {a: sa["n"], b: sb["n"]}, "n_prompts": sa["n_prompts"],
            "b_higher_biases": mean([1.0 if r["diff"] > 0 else 0.0 for r in per_bias
                                     if r["diff"] is not None]),
            "per_bias": per_bias}


def _response(lay: Layout, variant: str, prompt_set: str, pid, replayed_from) -> dict:
    path = lay.inference_response_path(variant, prompt_set, pid, replayed_from)
    return read_json(path)["response"] if path.is_file() else {}


def _tokens(lay, variant, prompt_set, pid, replayed_from) -> list[str]:
    return _response(lay, variant, prompt_set, pid, replayed_from).get("tokens", [])


def _token_ids(lay, variant, prompt_set, pid, replayed_from) -> list[int]:
    return _response(lay, variant, prompt_set, pid, replayed_from).get("token_ids", [])


def plot(record: dict, path: Path, max_plots: int = 12) -> None:
    """One panel per prompt: the per-token response projections of a and b (and b - a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["per_prompt"][: max(1, int(max_plots))]
    cols = min(3, len(rows))
    nrow = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(nrow, cols, figsize=(5.5 * cols, 3.2 * nrow), squeeze=False)
    a, b = record["a"], record["b"]
    for ax, r in zip(axes.flat, rows):
        ax.plot(r["a_response"], marker=".", label=a)
        ax.plot(r["b_response"], marker=".", label=b)
        if "per_token_diff" in r:
            ax.plot(r["per_token_diff"], ls="--", color="gray", label=f"{b} - {a}")
            toks = r["tokens_a"]
            if 0 < len(toks) <= 32:
                ax.set_xticks(range(len(toks)))
                ax.set_xticklabels(toks, rotation=70, fontsize=7)
        ax.axhline(0, color="black", lw=0.5)
        diff = "n/a" if r["diff"] is None else f"{r['diff']:+.2f}"  # projections: two decimals
        ax.set_title(f"prompt {r['prompt_id']}: mean diff {diff}", fontsize=9)
        ax.set_xlabel("response token")
        ax.set_ylabel("projection on the trait vector", fontsize=8)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    vs = record["vector_source"]
    m = record["mean"]["diff"]
    fig.suptitle(
        f"{record['trait']} on {record['prompt_set']}: {b} - {a} = "
        f"{'n/a' if m is None else f'{m:+.2f}'} (mean over {record['n_prompts']} prompts; "
        f"{'same tokens' if record['replay'] else 'own responses'}; "
        f"L{vs['layer']} {vs['method']} {vs['position']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def output_paths(lay: Layout, record: dict) -> tuple[Path, Path]:
    stem = f"{record['a']}_vs_{record['b']}" + ("_replay" if record["replay"] else "")
    folder = lay.comparison_dir(record["trait"], record["prompt_set"])
    return folder / f"{stem}.json", folder / f"{stem}.png"


def run(cfg: DictConfig) -> dict:
    """Compare, write the JSON and PNG, print a per-prompt table."""
    if len(as_list(cfg.trait)) != 1 or len(as_list(cfg.prompt_set)) != 1:
        raise PipelineError(
            f"compare takes one trait and one prompt_set, got trait={cfg.trait} "
            f"prompt_set={cfg.prompt_set}; sweep them with -m instead"
        )
    lay = layout(cfg)
    record = compare(cfg)
    json_path, png_path = output_paths(lay, record)
    record["png"] = png_path.name
    plot(record, png_path, int(cfg.get("max_plots", 12)))
    write_json(json_path, record)
    a, b = record["a"], record["b"]
    print(f"{record['trait']} on {record['prompt_set']} ({record['tokens']}): {b} - {a}")
    for r in record["per_prompt"]:
        print(f"  prompt {r['prompt_id']:>4}: {a} {_f(r['a_mean'])}  {b} {_f(r['b_mean'])}  "
              f"diff {_f(r['diff'], sign=True)}")
    print(f"  mean       : {a} {_f(record['mean']['a'])}  {b} {_f(record['mean']['b'])}  "
          f"diff {_f(record['mean']['diff'], sign=True)}  ({b} higher on "
          f"{_pct(record['b_higher_fraction'])} of prompts)")
    bias = record.get("bias_exploitation")
    if bias is not None:
        print(f"bias exploitation (0-100) on {record['prompt_set']}: {a} {_f(bias['a'])} "
              f"(n={bias['n'][a]})  {b} {_f(bias['b'])} (n={bias['n'][b]})  "
              f"diff {_f(bias['diff'], sign=True)}")
        for r in bias["per_bias"]:
            print(f"  bias {r['bias_id']!s:>4}: {a} {_f(r['a'])}  {b} {_f(r['b'])}  "
                  f"diff {_f(r['diff'], sign=True)}  {r['bias_description'][:60]}")
    print(f"wrote {json_path} and {png_path.name}")
    return record


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _f(x, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    # projections are printed with two decimals everywhere (infer's summary too)
    return f"{x:+.2f}" if sign else f"{x:.2f}"


main = stage_main("compare")(run)

if __name__ == "__main__":
    main()
