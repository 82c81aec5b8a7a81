"""What trained networks and studies show: study reports (:mod:`.report`) and the Student-t
intervals they give (:mod:`.statistics`), Grad-CAM (:mod:`.gradcam`), NL-SAM attention maps
(:mod:`.attention_maps`), localisation scores on the ``locate`` data (:mod:`.localisation`),
predictions (:mod:`.predict`), exports (:mod:`.export`), their figures (:mod:`.figures`) and
Hugging Face Hub folders (:mod:`.hub`).

The ``nlsam`` commands that run them are in :mod:`nlsam.cli`; the cost counter is
:mod:`nlsam.cost`. ``nlsam.analysis.attention_maps`` and ``nlsam.analysis.predict`` are the
functions of those names (their modules are reached with ``from nlsam.analysis.predict import
...``), as ``nlsam.engine.train`` is.
"""

from .attention_maps import AttentionMap, attention_figure, attention_maps, main_attention
from .export import check_export, export_model, load_safetensors
from .figures import (
    check_cmap,
    png_bytes,
    save_accuracy_by_stage_k,
    save_accuracy_curves,
    save_accuracy_vs_gflops,
    save_test_images,
    write_files,
)
from .gradcam import cam_figure, grad_cam, target_layer
from .hub import CardFacts, export_hub, hub_config, model_card
from .localisation import (
    CACHE_FILE,
    LocateData,
    area_share,
    attention_maps_batch,
    evaluate_localisation,
    grad_cam_maps,
    localisation_of_run,
    locate_data,
    mass_in_mask,
    pointing_game,
    prepare_maps,
    run_localisation,
    upsample,
)
from .predict import (
    Inspected,
    load_images,
    load_inspected,
    output_names,
    parse_input_size,
    predict,
    resolve_target_class,
)
from .report import GroupResult, write_report
from .statistics import mean_interval, paired_interval, t_cdf, t_quantile, t_quantile_975, welch_interval

__all__ = [
    "AttentionMap",
    "CACHE_FILE",
    "CardFacts",
    "GroupResult",
    "Inspected",
    "LocateData",
    "area_share",
    "attention_figure",
    "attention_maps",
    "attention_maps_batch",
    "cam_figure",
    "check_cmap",
    "check_export",
    "evaluate_localisation",
    "export_hub",
    "export_model",
    "grad_cam",
    "grad_cam_maps",
    "hub_config",
    "load_images",
    "load_inspected",
    "load_safetensors",
    "localisation_of_run",
    "locate_data",
    "main_attention",
    "mass_in_mask",
    "mean_interval",
    "model_card",
    "output_names",
    "paired_interval",
    "parse_input_size",
    "png_bytes",
    "pointing_game",
    "predict",
    "prepare_maps",
    "resolve_target_class",
    "run_localisation",
    "save_accuracy_by_stage_k",
    "save_accuracy_curves",
    "save_accuracy_vs_gflops",
    "save_test_images",
    "t_cdf",
    "t_quantile",
    "t_quantile_975",
    "target_layer",
    "upsample",
    "welch_interval",
    "write_files",
    "write_report",
]
