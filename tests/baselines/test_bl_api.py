"""The baselines' public API is pinned (a rename must be deliberate)."""

from spanet2.physics import features
from spanet2.report import plots, store_builder
from spanet2.training import dnn


def test_bl_public_api():
    assert {"FEATURE_NAMES", "FEATURE_NAMES_NO_EXTRA", "high_level_features", "write_features_file",
            "iter_feature_chunks", "M_HH"} <= set(features.__all__)  # fmt: skip
    assert {"DNNOptions", "train_dnn", "evaluate_dnn", "predict_dnn", "load_dnn_options"} <= set(dnn.__all__)
    assert {"build_store", "parse_method", "METHOD_GRAMMAR"} <= set(store_builder.__all__)
    assert {"plot_mass_planes", "plot_mhh_after_selection", "plot_pairing_efficiency", "plot_all"} <= set(
        plots.__all__
    )
    for module in (features, dnn, store_builder, plots):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
