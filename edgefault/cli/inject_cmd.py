"""``edgefault inject``: write a copy of a quantized ONNX model with memory faults in its integer weights or activation
buffers."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.core import ParameterSource

from edgefault.cli.options import BITS, Count, Finite, include_bias_option, json_option, seed_option, stored_bits_option
from edgefault.errors import EdgefaultError
from edgefault.faults import KINDS, Chip
from edgefault.faults.actinject import SITES, inject_sites_file
from edgefault.faults.discover import coverage_line, warning_lines
from edgefault.faults.formats import ACT_FORMATS
from edgefault.runtime.actprobe import activation_memory
from edgefault.text import printable

# Options that describe a chip; --map-in brings its own faults, so it takes none of them.
_CHIP_OPTIONS = ("kind", "rate", "count", "seed", "bits", "protect_bits", "layers", "burst", "include_bias")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", metavar="MODEL.onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), help="flip, sa0/sa1 (stuck-at), stuck (half sa0, half sa1), mbu.")
@click.option("--rate", type=Finite(), default=None, help="Probability that each targeted bit is faulty, in [0, 1].")
@click.option("--count", type=Count(0, 2**48), default=None, help="Exact number of faulty bits (mbu: of upsets).")
@click.option("--out", "out", required=True, metavar="FAULTY.onnx", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the faulty model.")
@seed_option
@click.option("--bits", type=BITS, default=None, metavar="LIST", help="Only these bit positions can be faulty, e.g. 7 or 0-3,7.")
@click.option("--protect-bits", type=BITS, default=None, metavar="LIST", help="Drop faults on these bit positions (as ECC would).")
@click.option("--layers", default=None, metavar="REGEX", help="Only tensors whose name matches this regex.")
@click.option("--site", type=click.Choice(SITES), default="weights", show_default=True,
              help="Which memory: the weights, the activation buffers between layers, or both (one chip seed).")
@click.option("--act-format", "act_format", type=click.Choice(ACT_FORMATS), default=None,
              help="Activation storage format; a file holds dense (permanent) activation faults only.")
@click.option("--transient", is_flag=True, default=False,
              help="Refused here: per-image faults need campaign --transient.")
@click.option("--map", "map_out", default=None, metavar="MAP.json", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the fault map: every fault and a per-tensor summary.")
@click.option("--map-in", "map_in", default=None, metavar="MAP.json",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Re-apply the faults of a recorded map instead of drawing a chip.")
@include_bias_option
@stored_bits_option
@click.option("--burst", type=int, default=None, help="mbu only: adjacent bits per upset (default 2, at most 8).")
@json_option
def command(model, kind, rate, count, out, seed, bits, protect_bits, layers, site, act_format, transient, map_out, map_in,
            include_bias, stored_bits, burst, as_json):
    """Write FAULTY.onnx: MODEL.onnx with faults in the stored bits of its integer weights or activations.

    The weight memory is every constant integer parameter at its stored width (int8/uint8,
    int4/uint4, int16/uint16, MatMulNBits codes; k bits for a k-bit model), from initializers
    and Constant nodes; int32 biases only with --include-bias. Faults follow a chip, drawn from
    (--seed, --kind, --rate or --count, filters): the same chip hits the same addresses on
    every model with the same memory size, and its faults at a rate include those at any lower
    rate. The output differs from the input only in the faulted weight bytes and one metadata
    entry recording the chip. The first line printed says what the memory covered.

    --site activations faults the activation memory instead: every integer tensor an integer
    kernel reads (and the quantized output), one image's worth, dense; the chip's cells are
    permanent, so the faulty model masks those tensors in the graph (BitwiseAnd/Or/Xor, opset
    18) and every image meets the same faulty bits. --site all faults both memories.

    \b
    Example:
      edgefault inject model.onnx --kind flip --rate 1e-3 --seed 1 --out faulty.onnx --map map.json
      edgefault inject model.onnx --site activations --kind flip --rate 0.01 --seed 1 --out f.onnx --map f.json
    """
    if transient:
        raise EdgefaultError("--transient faults change with every image, and a model file can hold only permanent "
                             "faults; use campaign --transient")
    if act_format is not None and site == "weights":
        raise EdgefaultError("--act-format applies to --site activations or all")
    if act_format not in (None, "dense"):
        raise EdgefaultError(f"a faulty model file holds dense activation faults only; faults in a {act_format} buffer "
                             f"depend on each image's data (use campaign --act-format {act_format})")
    context = click.get_current_context()
    if map_in is not None:
        given = [name for name in _CHIP_OPTIONS if context.get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise EdgefaultError(f"--map-in re-applies a recorded map; it takes no chip options (got {options})")
        chip = None
    else:
        chip = _chip(kind, rate, count, seed, bits, protect_bits, layers, burst, include_bias)
    done = inject_sites_file(model, out, site, chip=chip, map_in=map_in, map_out=map_out, stored_bits=stored_bits,
                             memory_of=activation_memory)
    if done.weights is None:
        _report_activations(done, model, out, map_out, map_in, chip, as_json)
        return
    fault_map = done.weights
    summary = {key: value for key, value in fault_map.summary().items() if key != "per_tensor"}
    for line in warning_lines(summary["coverage"]):
        click.echo(line, err=True)
    report = {
        "model": str(model),
        "out": str(out),
        "map": None if map_out is None else str(map_out),
        "map_in": None if map_in is None else str(map_in),
        "chip": None if fault_map.chip is None else fault_map.chip.to_dict(),
        **summary,
    }
    if done.activation_summary is not None:
        report["activations"] = {k: v for k, v in done.activation_summary.items() if k != "per_tensor"}
    if as_json:
        click.echo(json.dumps(report))
        return
    faults = f"{summary['faults']:,}"
    what = f"re-applied {faults} faults from {printable(map_in)}" if map_in else f"{faults} {chip.kind} faults"
    click.echo(coverage_line(summary["coverage"]))
    click.echo(
        f"{what} in {summary['tensors_hit']} of {len(fault_map.memory.tensors)} weight tensors "
        f"({summary['memory_bits']:,} stored bits): {summary['changed_bits']:,} stored bits changed in "
        f"{summary['changed_weights']:,} weights"
    )
    if done.activation_summary is not None:
        click.echo(_activation_lines(done, map_in, chip))
    click.echo(f"wrote {printable(out)}")
    if map_out is not None:
        click.echo(f"wrote {printable(map_out)}")


def _activation_lines(done, map_in, chip) -> str:
    summary = done.activation_summary
    faults = f"{summary['faults']:,}"
    what = f"re-applied {faults} activation faults from {printable(map_in)}" if map_in else f"{faults} {chip.kind} faults"
    return (f"{done.memory.coverage_line()}\n{what} in {summary['tensors_hit']} of {len(done.memory.tensors)} "
            f"activation tensors ({summary['memory_bits']:,} stored bits per image), the same cells for every image")


def _report_activations(done, model, out, map_out, map_in, chip, as_json) -> None:
    if as_json:
        click.echo(json.dumps({
            "model": str(model), "out": str(out), "map": None if map_out is None else str(map_out),
            "map_in": None if map_in is None else str(map_in), "chip": None if chip is None else chip.to_dict(),
            "activations": {k: v for k, v in done.activation_summary.items() if k != "per_tensor"},
        }))
        return
    click.echo(_activation_lines(done, map_in, chip))
    click.echo(f"wrote {printable(out)}")
    if map_out is not None:
        click.echo(f"wrote {printable(map_out)}")


def _chip(kind, rate, count, seed, bits, protect_bits, layers, burst, include_bias) -> Chip:
    if kind is None:
        raise EdgefaultError("--kind is required (flip, sa0, sa1, stuck or mbu), unless --map-in is given")
    if (rate is None) == (count is None):
        raise EdgefaultError("give exactly one of --rate and --count")
    if burst is not None and kind != "mbu":
        raise EdgefaultError("--burst applies to --kind mbu only")
    return Chip(
        kind,
        rate=rate,
        count=count,
        seed=seed,
        bits=bits,
        protect_bits=protect_bits or (),
        layers=layers,
        burst=2 if burst is None else burst,
        include_bias=include_bias,
    )
