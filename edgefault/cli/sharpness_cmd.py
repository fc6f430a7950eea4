"""``edgefault sharpness``: how sharp the minimum of a trained run is, and its loss landscape."""

from __future__ import annotations

import sys

import click

from edgefault.analysis import WEIGHT_SPACES, SharpnessConfig, SharpnessReport, analyze_sharpness
from edgefault.cli.options import MAX_BATCH, MAX_IMAGES, MAX_STEPS, Count, Finite, json_option, seed_option
from edgefault.fileio import to_json

_defaults = SharpnessConfig()


def format_summary(report: SharpnessReport, out_dir: str) -> str:
    """The human-readable summary ``edgefault sharpness`` prints without ``--json``.
    """
    power, trace, land = report.power_iteration, report.trace, report.landscape
    origin = len(land.alphas_1d) // 2  # the counts are odd: the middle point is a = 0
    status = "converged" if power.converged else "NOT converged"
    last_change = f", last relative change {power.relative_changes[-1]:.1e}" if power.relative_changes else ""
    run_dir = report.source.get("run_dir")
    return "\n".join([
        f"{report.model}{f' ({run_dir})' if run_dir else ''}: {report.samples} training images of {report.data}, "
        f"{report.parameters} {report.config.weight_space} weights in {len(report.layers)} layers",
        f"  loss                      {report.loss:.4f}  (accuracy {report.accuracy:.4f})",
        f"  SAM sharpness (rho {report.config.rho:g})  {report.sam_sharpness:.4f}  "
        f"(loss {report.sam.perturbed_loss:.4f} at w + rho g/|g|, |g| = {report.sam.gradient_norm:.4f})",
        f"  top Hessian eigenvalue    {report.top_eigenvalue:.4g}  "
        f"(power iteration {status} after {power.iterations} steps{last_change})",
        f"  Hessian trace             {report.hessian_trace:.4g} +- {report.hessian_trace_stderr:.2g}  "
        f"(Hutchinson, {trace.probes} probes, standard error)",
        f"  1-D landscape             loss {land.loss_1d[0]:.3g} at a = {land.alphas_1d[0]:g}, "
        f"{land.loss_1d[origin]:.3g} at 0, {land.loss_1d[-1]:.3g} at a = {land.alphas_1d[-1]:g}",
        f"  ({report.seconds['total']:.0f} s)  -> {out_dir}: {', '.join(sorted(report.files.values()))}",
    ])


@click.command()
@click.argument("run_dir", metavar="RUN_DIR")
# Not the shared --data option: its default is mnist5k, while here the default is the run's own data.
@click.option("--data", "data_spec", default=None, metavar="SPEC",
              help="Dataset whose training split defines the loss [default: the run's dataset].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for metrics.json, landscape_1d.png and landscape_2d.png (new, empty or an earlier "
                   "sharpness output).")
@click.option("--rho", default=_defaults.rho, show_default=True, type=Finite(),
              help="SAM radius: the loss increase at w + rho g/|g| is the SAM sharpness.")
@seed_option
@click.option("--samples", default=_defaults.samples, show_default=True, type=Count(1, MAX_IMAGES),
              help="Training images (a seeded subset) that define the loss.")
@click.option("--power-iterations", default=_defaults.power_iterations, show_default=True, type=Count(1, MAX_STEPS),
              help="Most Hessian-vector products for the top eigenvalue.")
@click.option("--tolerance", default=_defaults.power_tolerance, show_default=True, type=Finite(),
              help="Power iteration stops when the eigenvalue's relative change is below this.")
@click.option("--probes", default=_defaults.hutchinson_probes, show_default=True, type=Count(1, MAX_STEPS),
              help="Rademacher probes for Hutchinson's trace estimate.")
@click.option("--points", default=_defaults.landscape_points, show_default=True, type=Count(1, 1001),
              help="Points of the 1-D landscape (odd).")
@click.option("--grid", "grid_size", default=_defaults.landscape_grid, show_default=True, type=Count(1, 201),
              help="Points per axis of the 2-D landscape (odd).")
@click.option("--extent", default=_defaults.landscape_extent, show_default=True, type=Finite(),
              help="Landscapes span [-extent, extent] times the filter-normalized directions.")
@click.option("--space", default=_defaults.weight_space, show_default=True, type=click.Choice(WEIGHT_SPACES),
              help="quantized: the dequantized int weights the deployed model stores; latent: the float "
                   "weights training updates.")
@click.option("--batch-size", default=_defaults.batch_size, show_default=True, type=Count(1, MAX_BATCH),
              help="Images per forward pass (memory only; the numbers do not depend on it beyond rounding).")
@click.option("--device", default=_defaults.device, show_default=True, help="auto, cpu or cuda[:N].")
@json_option
def command(run_dir, data_spec, out, rho, seed, samples, power_iterations, tolerance, probes, points, grid_size,
            extent, space, batch_size, device, as_json):
    """SAM sharpness, top Hessian eigenvalue, Hessian trace and filter-normalized loss landscapes.

    Example: edgefault sharpness runs/std --out runs/std-sharpness --rho 0.05
    """
    config = SharpnessConfig(rho=rho, seed=seed, samples=samples, power_iterations=power_iterations,
                             power_tolerance=tolerance, hutchinson_probes=probes, landscape_points=points,
                             landscape_grid=grid_size, landscape_extent=extent, weight_space=space,
                             batch_size=batch_size, device=device)
    report = analyze_sharpness(run_dir, data_spec, config, out, progress=not as_json)
    if as_json:
        sys.stdout.write(to_json(report.to_dict()) + "\n")
    else:
        click.echo(format_summary(report, out))
