"""Session-scoped fixtures shared across test files (tiny checkpoints are built once)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> dict[str, Path]:
    """A tiny random checkpoint per registered architecture with a tiny builder (LLaVA, Qwen2-VL,
    Qwen2.5-VL, LLaVA-NeXT, Gemma 3, Idefics3 today) plus a LoRA adapter ('llava_lora')."""
    import torch

    torch.set_num_threads(1)
    from matprobe.extract.tiny import build_tiny_adapter, build_tiny_checkpoint, tiny_architectures

    root = tmp_path_factory.mktemp("tiny_ckpts")
    # every registered architecture with a tiny builder (extract/tiny/<model_type>.py): a new one is
    # built and tested here without editing this file
    # the seeds the fixtures were made with (tests such as the bf16 one rely on these weights); an
    # architecture added later takes the next free seed, so it needs no edit here
    known = ("llava", "qwen2_vl", "qwen2_5_vl", "llava_next", "gemma3", "idefics3")
    out = {arch: build_tiny_checkpoint(root / arch, arch, seed=known.index(arch) if arch in known else len(known) + i)
           for i, arch in enumerate(tiny_architectures())}
    out["llava_lora"] = build_tiny_adapter(root / "llava_lora", out["llava"], seed=7)
    return out


def write_tiny_manifest(folder: Path, n: int = 10, seed: int = 0, n_options: int = 4) -> Path:
    """A MAT manifest of `n` samples with random PNGs of mixed sizes (28–56 px) and mixed
    prompt lengths; answers cycle through the options."""
    from PIL import Image

    folder = Path(folder)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [(28, 28), (28, 56), (56, 56), (56, 28), (42, 56)]
    questions = ["What is shown?", "Which organ is visible in this image of the body?", "Finding?"]
    options = ["Normal", "Tumor", "Cyst", "Stone", "Edema", "Fracture"][:n_options]
    mods, anas, tasks = ["CT", "MRI", "X-ray"], ["Chest", "Brain", "Lung"], ["Classification", "Segmentation"]
    path = folder / "data.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
            rec = dict(
                id=f"s{i:03d}", image=f"img/{i}.png", question=questions[i % 3], options=options,
                answer=i % len(options), modality=mods[i % 3], anatomy=anas[(i // 3) % 3],
                task=tasks[i % 2],
            )
            fh.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    return write_tiny_manifest(tmp_path_factory.mktemp("tiny_data"), n=10)


@pytest.fixture(scope="session")
def make_tiny_manifest():
    """The `write_tiny_manifest(folder, n, seed, n_options)` builder, for tests that need their own data."""
    return write_tiny_manifest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> Path:
    """`matprobe demo --quick` in ROOT/reports/demo of a temporary ROOT (the layout the README's
    study commands expect); returns that run directory.

    Built once per `pytest` run: under pytest-xdist the first worker that needs it builds it under
    a file lock in the run's shared temporary directory, the others wait for it, and each worker
    gets a copy in a ROOT of its own (tests write beside it and into it). pytest-xdist's
    `--dist loadgroup` cannot keep these tests in one worker with pytest 9 (its renamed node ids
    no longer take effect), and each worker built the demo: two 140 s setups in one `make test`."""
    import os
    import shutil

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's temporary directory, above each worker's own
    template = shared / "quick_demo_template"
    with FileLock(str(shared / "quick_demo_template.lock")):
        if not (template / "built").exists():
            import torch
            from typer.testing import CliRunner

            from matprobe.cli import app

            torch.set_num_threads(1)
            shutil.rmtree(template, ignore_errors=True)  # a build that failed part-way
            res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(template / "reports" / "demo"),
                                           "--workers", "2"])
            assert res.exit_code == 0, res.output
            (template / "built").touch()
    root = tmp_path_factory.mktemp("quick_demo")
    shutil.copytree(template / "reports", root / "reports", symlinks=True)
    return root / "reports" / "demo"


# ---------------------------------------------------------------- the slow marker (`make test-fast`)
# Tests marked `slow` are left out by `pytest -m "not slow"` (`make test-fast`, under 90 s on two cores;
# experiments/benchmarks/RESULTS.md); `make test` and CI run everything. A test is slow when it takes
# 1 s of CPU or more (user + system, its own and its child processes', fixtures of wider scope not
# counted), measured 2026-12-02 on the 2-core development machine (loaded: the figures run high); the
# figure after each name is that time. Every test that uses the quick demo (a minute of CPU, built once
# per session) is slow too.
# tests/test_suite_markers.py checks each name here still names a test.
SLOW: dict[str, set[str]] = {
    "test_adam_written_out.py": {  # the first torch optimiser built in a process imports torch._dynamo
        "test_same_bits_as_torch_adam[0.0]",  # 1.3 s
        "test_same_bits_as_torch_adam[0.01]",
    },
    "test_step_withheld.py": {"test_noise_with_one_two_class_stratum_reads_near_zero"},  # 5.9 s
    "test_penalty_extension.py": {"test_the_path_goes_below_the_grid_where_it_still_gains_and_the_interval_then_covers"},  # 3.4 s
    "test_map_choice.py": {"test_thin_directions_choose_the_features_without_the_map_and_read_nearer_the_truth"},  # 3.5 s
    "test_readme_tiny_trial_s29b.py": {"test_readme_tiny_trial_runs_as_printed",  # 34 s
                                       "test_readme_tiny_trial_block_builds_every_architecture"},  # 1.3-2.3 s each
    "test_user_findings_s29b.py": {"test_sigterm_before_any_finished_batch_says_no_store_was_written"},  # 1.1 s
    "test_stratum_penalty_gap.py": {"test_gap_widens_upper_ends_by_the_recorded_gaps",  # 2.2 s
                                    "test_small_cells_note_names_no_critic_for_knn",  # 3.9 s
                                    "test_a_wider_representation_needs_rows_for_its_inputs",  # 1.7 s
                                    "test_stratum_entries_one_sided_where_their_own_reasons_hold"},  # 1.4 s
    "test_one_sided_strata.py": {"test_two_sided_intervals_cover_over_draws"},  # 9.7 s
    "test_rerun_consistency.py": {"test_a_copied_run_directory_resumes_its_stores",  # 4.9 s
                                  "test_source_chains_are_recomputed_when_an_mi_setting_changes"},  # 2.8 s
    "test_api.py": {
        "test_mi_and_check_equal_the_cli",  # 3.5 s
        "test_mp_mi_is_an_ordinary_function_and_the_package_still_imports",  # 2.4 s
        "test_report_equals_the_cli",  # 6.0 s
    },
    "test_compare.py": {
        "test_compare_cli_one_line_errors_and_json",  # 1.1 s
        "test_known_delta_is_covered_and_detected",  # 1.3 s
        "test_null_repeats_reject_at_most_7_percent",  # 45.0 s
        "test_two_layers_of_one_store_equal_two_stores",  # 2.4 s
    },
    "test_compare_relate.py": {
        "test_relation_points_correlation_and_fano",  # 1.1 s
    },
    "test_relate_study.py": {
        "test_relate_folds_reach_the_estimator_from_the_cli_and_the_api",  # 2.8 s: five relates
        "test_relate_says_a_checkpoint_answers_one_option_as_the_report_does",  # 2.0 s: three stores, twice
        "test_with_stratum_effects_and_no_relation_the_p_rejects_at_its_level_and_scipys_does_not",  # 1.7 s
        "test_relate_out_csv_has_the_columns_of_format_csv_in_bits",  # 3 s: relate at 5 folds, twice
        "test_with_stratum_effects_and_no_relation_the_interval_drawing_strata_covers_zero",  # 1.5 s
    },
    "test_error_module.py": {
        "test_every_matprobe_error_is_declared_in_the_error_module",  # 1.1 s (imports every module)
    },
    "test_entry_points.py": {
        "test_cli_api_and_pipeline_step_give_identical_numbers",  # 1.3 s
        "test_quickstart_example_runs",  # 1.4 s
    },
    "test_estimator_contract.py": {
        "test_plugin_through_sweep_with_worker_processes",  # 7.9 s
    },
    "test_extract_adapters.py": {
        "test_old_layout_adapter_gives_the_same_z_as_new_layout[llava]",  # 1.8 s
    },
    "test_extract_runner.py": {
        "test_sigkill_then_resume_equals_uninterrupted",  # 5.1 s
        "test_torchrun_two_processes_equal_single_process",  # 15.7 s
    },
    "test_full_disk.py": {
        "test_extract_overwrite_under_a_file_size_limit_keeps_the_old_store",  # 6.4 s
        "test_extract_under_a_file_size_limit_leaves_no_store",  # 6.3 s
        "test_finalize_under_a_file_size_limit_keeps_the_finished_store",  # 6.4 s
        "test_mi_out_under_a_file_size_limit_writes_nothing_and_keeps_the_store",  # 3.1 s
        "test_sweep_under_a_file_size_limit_writes_nothing_and_keeps_the_store[False]",  # 3.1 s
        "test_sweep_under_a_file_size_limit_writes_nothing_and_keeps_the_store[True]",  # 3.1 s
    },
    "test_fuzz_inputs.py": {
        "test_manifest_records_load_exactly_or_fail_with_one_clear_error",  # 2.3 s
    },
    "test_layering.py": {
        "test_running_mi_loads_no_higher_layer",  # 2.8 s
    },
    "test_mi.py": {
        "test_a_one_factor_chain_estimates_its_term_once_and_shows_it_once",  # 1.5-3.4 s
        "test_conditional_chain_terms_match_truth",  # 5.7 s
        "test_estimator_recovers_single_factor_mi[infonce]",  # 2.2 s
        "test_estimator_recovers_single_factor_mi[mine]",  # 1.9 s
    },
    "test_mi_cli.py": {
        "test_mi_command_bits_are_nats_over_ln2",  # 1.2 s
        "test_mi_command_writes_results_matching_python",  # 2.2 s
    },
    "test_mi_label_free.py": {
        "test_label_free_pca_spans_the_top_principal_subspace_and_keeps_massive_columns",  # 4.1 s
        "test_a_column_major_z_is_left_as_the_caller_gave_it",  # 1.6 s
    },
    "test_raise_pca.py": {
        "test_a_chain_settles_one_size_on_all_its_terms",  # 6.3 s
        "test_signal_under_the_noise_is_read_at_the_raised_size",  # 2.1 s + 2.0 s (the shared sample)
        "test_steps_follow_the_ladder_and_stop_where_nothing_is_flagged",  # 1.6 s
        "test_a_lone_estimate_raises_its_own_plan",  # 1.5 s
        "test_raising_stops_at_the_component_cap",  # 0.5 s + the shared sample
        "test_a_sweep_table_says_the_size_each_cell_was_read_at",  # 4.5 s
        "test_half_of_the_coordinates_or_more_means_every_coordinate",  # 6 s
        "test_the_mi_table_says_the_size_it_was_read_at",  # 0.3 s + the shared sample
        "test_a_term_still_flagged_after_a_raise_says_where_it_stopped",  # 1.1 s
    },
    "test_requested_pca.py": {
        "test_a_term_read_on_the_requested_features_carries_their_residual_verdict",  # 4.1 s
        "test_an_alternative_is_not_admitted_where_the_features_bend_too_or_it_stays_linear",  # 3.0 s
        "test_an_alternative_whose_ladder_bends_is_kept_where_it_predicts_better",  # 1.6 s
    },
    "test_reduction_check.py": {
        "test_no_flag_where_the_kept_components_carry_the_signal",  # 1.3 s
        "test_a_partial_loss_raises_the_upper_end_by_the_slack",  # 1.6 s
        "test_baselines_skip_the_test_and_keep_their_numbers",  # 3.5 s
    },
    "test_mi_quality.py": {
        "test_class_scales_truth_matches_quadrature_and_the_sampler[gauss-0.0]",  # 1.2 s
        "test_class_scales_truth_matches_quadrature_and_the_sampler[t-0.8]",  # 1.0 s
        "test_heavy_tails_probe_and_coverage_over_replicates",  # 3.3 s
        "test_many_classes",  # 1.1 s
        "test_massive_activations_probe_and_mine",  # 2.7 s
        "test_mixture_class_conditionals[mine]",  # 2.2 s
        "test_mixture_class_conditionals[probe]",  # 2.0 s
    },
    "test_grouped_folds.py": {
        "test_copies_of_a_null_item_never_read_as_information",  # 12 s (forty-fifth session)
        "test_copies_of_informative_items_cover_the_one_row_truth",  # 2.2 s
        # 0.5-3.3 s per case (forty-seventh session)
        "test_a_resumed_sweep_recomputes_cells_grouped_otherwise_than_mi_groups_now",
    },
    "test_numerical_rank.py": {
        "test_rank_deficient_rows_get_two_sided_intervals_that_cover_the_truth",  # 4.3 s (forty-seventh session)
    },
    "test_grouped_compare.py": {
        "test_the_online_code_of_an_items_copies_is_that_of_the_items_sent_once",  # 3.1 s (forty-sixth session)
        "test_stores_whose_images_repeat_compare_a_null_as_null",  # 2.9 s
        "test_identical_rows_are_compared_in_one_fold_and_each_side_covers_its_one_row_truth",  # 2.2 s
        "test_relate_and_check_read_a_null_label_of_repeated_images_as_null",  # 1.9 s
        "test_identical_features_of_distinct_images_are_a_feature_not_copies",  # 3.1 s
    },
    "test_rare_class_entropy.py": {
        "test_rare_classes_widen_the_upper_end_by_their_entropy_and_cover",  # 9 s (forty-fifth session)
        "test_a_stratum_of_rare_classes_gets_its_own_slack",  # 1 s
    },
    "test_radial_offsets.py": {
        "test_the_choice_is_the_argmin_of_the_recorded_losses_and_each_loss_is_that_candidates_own",  # 5.8 s
        "test_offered_only_the_chosen_offset_the_held_out_value_is_the_same_bits",  # 4.1 s
        "test_heavy_tails_read_nearer_the_truth_than_with_the_fixed_offset",  # 9.0 s
        "test_heavy_tails_on_a_few_columns_beside_massive_ones_are_found_and_damped_along_them",  # 3.0 s
        "test_the_unmapped_reduction_is_the_label_free_reduction_without_the_quantile_map",  # 1 s
        "test_rotated_heavy_tails_read_nearer_the_truth_with_the_unmapped_radius",  # 19 s
    },
    "test_misspecification.py": {
        "test_a_block_that_shares_the_scale_is_found_and_its_kappa_has_the_closed_form",  # 1.8 s
        "test_the_blocks_kappa_on_held_apart_rows_is_centred_at_zero_within_its_null_sd[1600-64-1.7]",  # 3.5 s
        "test_a_tiny_gaussian_store_is_not_taken_for_heavy_tails",  # 1.5 s
        "test_heavy_tailed_classes_are_one_sided_and_at_least_cover",  # 1.4 s
        "test_small_mi_under_heavy_tails_is_one_sided_and_covers_where_two_sided_missed",  # 3.1 s
        "test_radially_damped_features_only_where_the_rows_scale_varies_and_they_predict_better",  # 4.2 s
        "test_beside_massive_coordinates_a_near_zero_reading_stays_one_sided[small-dependence]",  # 1.2 s
        "test_beside_massive_coordinates_a_near_zero_reading_stays_one_sided[null]",  # 1.2 s
        "test_the_radial_check_keeps_a_well_specified_task_two_sided",  # 3.6 s
        "test_a_spiral_bend_is_caught_by_the_radial_check_where_the_ladder_missed_it",  # 2.9 s
        "test_weights_fitted_beside_a_fixed_critic_match_a_binomial_glm_with_offset",  # 2.1 s (statsmodels import)
    },
    "test_newcomer_cli.py": {
        "test_mi_off_tty_prints_full_term_names",  # 7.8 s
    },
    "test_entropy_limit.py": {
        "test_coverage_of_the_population_entropy",  # 2.3-4.8 s
        "test_strata_and_seeds_are_capped_at_their_own_limits",  # 3.7 s
    },
    "test_second_moment_check.py": {
        "test_equal_mean_classes_are_no_longer_a_confident_null",  # 1.3-1.6 s per draw
        "test_classes_that_differ_only_in_their_means_are_not_flagged_by_it",  # 2 s
    },
    "test_additive_checks.py": {
        "test_the_truths_two_ways",  # 3.5 s
        "test_laplace_classes_are_flagged_and_fitted_on_the_hinges",  # 2.3-2.6 s per draw
        "test_label_noise_is_flagged_by_the_index_check",  # 3-4.5 s per draw
        "test_argmax_label_noise_is_flagged_by_the_calibration_check",  # 4-6 s per draw
        "test_a_chains_direct_term_and_first_term_each_check_their_own_labels",  # 3-6 s
    },
    "test_quadratic_check.py": {
        "test_clusters_per_class_are_flagged_and_fitted_on_the_products",  # 2-3 s per draw
        "test_classes_that_differ_only_in_scale_are_read_on_the_products",  # 3-6 s per seed
        "test_gaussian_classes_with_a_shared_covariance_stay_two_sided",  # 1.7 s
    },
    "test_numerics.py": {
        "test_dispatch_level_moves_the_bits_unless_pinned",  # 20.7 s
        "test_an_error_in_the_portable_process_is_the_same_one_error_line",  # 8.6 s
    },
    "test_llava_original.py": {
        "test_init_and_run_take_original_llava_runs",  # 3.3 s (init, a pipeline run, an extract)
    },
    "test_one_task_study.py": {
        "test_init_and_run_on_a_study_of_one_task",  # 11 s
        "test_report_without_any_stratum_mi_says_so",  # 2.5 s
        "test_sweep_refuses_a_factor_with_one_class_before_any_cell",  # 3.6 s
    },
    "test_rare_classes.py": {
        "test_run_refuses_a_factor_the_merge_leaves_one_class_or_too_small_before_any_work",  # 2.5 s
        "test_a_rerun_says_which_mi_results_it_recomputes_and_why",  # 4.2 s: three runs (2026-12-07)
        "test_a_stratum_whose_answers_are_one_class_only_once_merged_is_said_so",  # 3.5 s: a run
    },
    "test_learning_curve_rate.py": {
        "test_the_step_on_the_estimator_is_the_formula_on_its_own_rows",  # 3 s (two estimates)
    },
    "test_own_study.py": {
        "test_init_with_stores_writes_the_layers_and_pools_they_hold",  # 1.1 s (contended): init on two stores
        "test_own_study_runs_as_printed",  # 12.3 s
        "test_own_data_without_models_runs_through_the_toy_fine_tuning_as_the_readme_says",  # 15 s (a whole run)
        "test_run_names_the_users_manifest_for_a_missing_image_before_any_work",  # 2 s
        "test_training_rows_of_checkpoints_trained_elsewhere_and_a_constant_z_in_the_report",  # 5 s (a whole run)
        "test_a_study_of_crossmeds_ablations_gives_table_ix_rows",  # 7 s (a whole run)
    },
    "test_provenance.py": {
        "test_extract_resume_refuses_swapped_weights_and_edited_manifest",  # 2.4 s
        "test_full_disk_through_a_file_size_limit_is_one_line_and_keeps_inputs",  # 1.8 s
        "test_extract_resume_takes_a_new_split_without_recomputing",  # 1.2 s (three extractions)
    },
    "test_published_configs.py": {
        "test_published_store_equals_transformers_forward[gemma3]",  # 2.5 s
    },
    "test_toy_architecture.py": {
        "test_a_registered_toy_architecture_runs_every_shared_check",  # 3.7 s (builds its checkpoint)
    },
    "test_refusals.py": {
        "test_an_image_cell_that_is_no_image_is_one_short_problem_not_a_traceback",  # 2 subprocesses (2026-12-05)
        "test_images_in_a_folder_below_the_manifest_are_found_for_the_hint",  # 2.3 s, 3 subprocesses (2026-12-05)
        "test_benchmark_layouts_options_per_letter_column_and_inline_images",  # 0.8 s + a subprocess
        "test_a_manifest_without_ids_names_items_by_row_and_slake_img_name_is_the_image",  # 0.8 s, subprocess
        "test_a_proportion_outside_its_range_is_refused_naming_the_row",  # each parameter 1.6-1.8 s, CLI subprocess
        "test_bad_options_are_refused_at_once",  # each parameter ~1.1 s wall, in a subprocess
        "test_level_in_percent_is_one_line_naming_the_fraction",  # each parameter 1.0-3.1 s
        "test_a_missing_store_or_a_folder_is_refused_at_once",  # each parameter 4 subprocesses, ~1.5 s (2026-12-06)
        "test_misnamed_manifest_columns_are_refused_at_once",  # 1.2 s wall, subprocess
        "test_negative_pca_is_refused",  # 1.1 s wall, subprocess
        "test_locked_output_is_refused_at_once",  # 1.0 s wall, subprocess
        "test_a_repeated_problem_is_listed_once_with_its_records",  # 0.9 s wall, subprocess
        "test_accuracy_in_percent_is_refused_unless_said",  # 2.6 s
        "test_checkpoint_without_config_is_refused_at_once",  # 1.4 s
        "test_checkpoint_saved_without_its_processor_is_refused_at_once",  # each parameter ~1.2 s wall, subprocess
        "test_ctrl_c_during_extract_keeps_finished_rows_and_resumes",  # 26.0 s
        "test_ctrl_c_during_run_names_the_run_directory_and_keeps_the_store",  # 18.8 s
        "test_duplicate_factors_are_refused[M,M,T-M twice]",  # 1.4 s (4 subprocesses since 2026-12-06, each at once)
        "test_duplicate_factors_are_refused[M,modality,T-M and modality]",  # 1.4 s
        "test_duplicate_factors_are_refused[anatomy,A-anatomy and A]",  # 1.5 s
        "test_existing_store_of_other_samples_or_settings_is_refused_at_once",  # 1.7 s
        "test_mi_shows_a_fixed_factor_term_as_not_identifiable",  # 3.5 s
        "test_report_flags_degenerate_terms_and_one_option_checkpoints",  # 2.0 s
        "test_run_refuses_before_training_or_loading",  # 2.6 s
        "test_significance_level_and_alpha",  # 2.9 s
        "test_sigterm_during_mi_writes_nothing_and_says_so",  # 2.7 s
        "test_sigterm_during_sweep_keeps_finished_cells",  # 6.1 s
        "test_unknown_columns_are_listed_once_with_close_matches",  # 2.4 s
        "test_user_mistakes_are_not_called_bugs",  # 4.2 s
        "test_validate_flags_fixed_factors_and_one_answer_strata",  # 1.3 s
    },
    "test_data_model.py": {
        "test_transparent_images_are_read_as_llava_reads_them_and_are_said",  # 1.6 s (2026-12-05)
    },
    "test_defaults_on_outputs.py": {
        "test_significance_without_options_on_the_demo_results",  # 1.2 s
    },
    "test_report.py": {
        "test_html_report_in_a_browser",  # 5.7 s with chromium installed (CI installs it)
        "test_browser_layout_check_can_fail",  # 0.9 s with chromium
        "test_committed_demo_report_rebuilds_from_committed_files",  # 2.9 s
        "test_findings_json_is_strict_json_with_null_where_a_number_is_undefined",  # 2.6 s: a run, then its report
        "test_a_metric_on_several_targets_is_paired_by_target_and_one_on_one_target_by_seed",  # 2 report builds, ~3 s each
        "test_a_condition_with_fewer_seeds_is_paired_on_the_runs_both_have",  # 5.1 s (2026-12-05)
        "test_summary_says_no_paired_test_where_conditions_share_one_run",  # 5.4 s (2026-12-05)
        "test_format1_run_with_working_directory_paths_after_a_move",  # 3.0 s
        "test_legends_do_not_cover_data",  # 1.7 s
        "test_markdown_tables_parse_with_consistent_cells",  # 4.5 s
        "test_moved_run_gives_the_same_report",  # 9.0 s
        "test_items_table_leaves_out_items_of_a_one_class_stratum",  # 7.3 s: a run, then its report
        "test_report_imports_nothing_from_pipeline_or_cli",  # 3.4 s
        "test_single_layer_run_has_no_layer_figure",  # 2.3 s
        # these three share the module's report_run fixture (5.4 s), which then runs in the full suite only
        "test_every_column_is_in_the_glossary",
        "test_tables_are_labelled_and_p_values_named",
        "test_fano_table_carries_the_check_intervals",
    },
    "test_significance.py": {
        "test_compare_conditions_end_to_end[seed]",  # 1.4 s
        "test_compare_conditions_end_to_end[target]",  # 1.6 s
    },
    "test_store.py": {
        "test_sigkill_mid_append_leaves_exactly_completed_rows",  # 1.6 s
    },
    "test_store_errors.py": {
        "test_resume_after_an_unreadable_image_and_under_a_file_size_limit",  # 5.7 s
    },
    "test_refused_run_keeps_data.py": {  # real extractions of the tiny llava (2026-12-05, Intel Xeon)
        "test_a_refused_rerun_leaves_the_runs_data_files_as_they_were",  # 1.7 s
        "test_an_accepted_change_is_written_once_the_extraction_took_it",  # 1.2 s
    },
    "test_study_grid.py": {
        "test_run_and_report_on_any_study[both-t1-s1-split-label]",  # 1.2 s
        "test_run_and_report_on_any_study[both-t2-s2-nosplit-nolabel]",  # 2.1 s
        "test_run_and_report_on_any_study[cls-t2-s2-split-label]",  # 1.7 s
        "test_run_and_report_on_any_study[seg-t1-s2-split-nolabel]",  # 1.4 s
        "test_run_and_report_on_any_study[seg-t2-s1-nosplit-label]",  # 1.3 s
        "test_summary_says_when_every_paired_difference_is_the_same",  # 1.1 s
        "test_run_and_report_on_any_study[cls-t1-s1-nosplit-nolabel]",  # 1.7 s
    },
    "test_source_confounding.py": {
        "test_run_estimates_modality_against_source_and_the_report_shows_it",  # 1.7-1.9 s each
    },
    "test_sweep.py": {
        "test_parallel_processes_give_the_serial_table",  # 8.4 s
        "test_resume_recomputes_nothing_finished",  # 3.3 s
        "test_sweep_values_equal_chain_terms_and_pointwise",  # 1.4 s
        "test_torchrun_two_ranks_give_the_one_process_table",  # 13.5 s
    },
    "test_doctests.py": {
        "test_docstring_examples[matprobe.api.report]",  # 5.8 s: a two-store study, then its report
        "test_docstring_examples[matprobe.api.extract]",  # 3.5 s: a tiny LLaVA built and run
        "test_docstring_examples[matprobe.api.run]",  # 2.5 s: a four-store study
    },
    "test_shared_fits.py": {
        "test_shared_fits_give_the_bits_of_fitting_alone",  # 1.5 s
    },
    "test_latent_cells.py": {
        "test_on_clustered_classes_the_level_is_chosen_and_nearer_the_truth",  # 18 s: two n = 6k estimates
    },
    "test_written_out_grads.py": {"test_the_estimate_has_autograds_bits"},  # 6 s: two n = 2k estimates
    "test_check_small_triplet.py": {
        "test_a_few_row_triplet_is_a_sparse_stratum_and_the_others_are_estimated",  # 1.7 s
        "test_the_check_command_runs_on_such_a_store",  # 6.7 s: mi, then check
        "test_a_rare_answer_class_names_what_check_can_do",  # 1.7 s
        "test_an_estimator_given_pca_0_keeps_every_coordinate",  # 1.2 s on a loaded machine
    },
    "test_elliptical_level.py": {
        "test_on_classes_that_differ_in_scale_the_level_is_chosen_and_nearer_the_truth",  # 12 s: two n = 6k estimates
    },
    "test_probe_ladder_rows.py": {
        "test_below_the_cap_the_estimate_is_unchanged_bit_for_bit",  # two n = 1,500 estimates: 10 CPU s (was 20 at n = 3,000, 2 seeds)
        "test_check_on_a_subset_then_the_chosen_level_on_every_fitting_row",  # 2.9 s
        "test_the_check_stops_after_its_patience_and_a_level_fit_after_the_longer_one",  # 2.5 s
        "test_every_check_fits_on_the_folds_one_set_of_check_rows",  # 6.3 s (machine loaded)
        "test_a_check_made_on_its_own_rows_reads_what_all_rows_would_give",  # 5.1 s: two n = 2,000 estimates
    },
    "test_compare_relate_formats.py": {
        "test_compare_csv_and_json_are_the_comparisons_numbers",  # 1.0-1.6 s: two sides and a bootstrap
    },
    "test_one_sided_display.py": {
        "test_the_chain_difference_column_is_explained_where_it_has_numbers",  # 1 s: a two-term chain
        "test_a_pointwise_csv_says_where_its_items_average_to_a_clipped_terms_raw_estimate",  # a chain, twice written
        "test_a_sparse_stratum_is_named_by_its_labels_in_the_note",  # a three-term chain
    },
    "test_control_tasks.py": {
        "test_selectivity_contains_zero_on_null_tasks",  # 2.4 s
        "test_a_sweep_resumed_with_other_settings_is_told_what_differs",  # 1 s: a sweep, then five refusals
    },
    "test_compare_default_chain.py": {
        "test_compare_reads_mis_number_for_a_term_of_mis_default_chain",  # 2.7 s: a chain, then four comparisons
    },
    "test_mi_portable_numerics.py": {
        "test_mi_portable_numerics_gives_the_bits_of_a_portable_runs_mi",  # 30 s: two pipeline runs, then mi in a portable process
        "test_call_portable_computes_in_a_checked_process_and_raises_its_error",  # 3 child processes importing torch
    },
    "test_init_condition_names.py": {
        "test_a_name_of_ones_own_is_refused_with_the_conditions_it_may_use",  # 1.2 s: init's imports, twice refused
    },
    "test_sweep_resume_settings.py": {
        "test_a_table_no_nearby_settings_explain_says_so",  # 0.8-1.3 s: every nearby digest tried
    },
    "test_demo.py": {
        "test_the_pipeline_runs_the_codelength_it_is_asked_for",  # 3.3 s: the MI job and the CLI
    },
    "test_paper_ready.py": {
        "test_latex_of_every_command_is_ascii",  # 4.4 s: the stores and their MI (fixture), mi 1.8 s
        "test_quiet_silences_progress_in_a_portable_numerics_process",  # 21 s: two portable-numerics processes
    },
    "test_terminal.py": {
        "test_mi_fits_a_100_column_terminal",  # 4.7 s
        "test_significance_tables_and_notes_fit",  # 4.4 s
        "test_store_info_fits_and_keeps_provenance_behind_verbose",  # 4.7 s
    },
}
SLOW_FIXTURES = ("quick_demo",)


def is_slow(item) -> bool:
    names = SLOW.get(item.path.name, set())
    return (item.name in names or getattr(item, "originalname", item.name) in names
            or any(f in SLOW_FIXTURES for f in getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)


def readme_commands(heading: str, first_block_only: bool = False) -> list[str]:
    """The shell commands of the plain fenced blocks under README.md's `## heading` (comment and
    blank lines dropped, backslash continuations joined), as a user would type them."""
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    commands = []
    for block in blocks[:1] if first_block_only else blocks:
        current = ""
        for line in block.splitlines():
            if line.lstrip().startswith("#") or not line.strip():
                continue
            current += line.rstrip().rstrip("\\") + " "
            if not line.rstrip().endswith("\\"):
                commands.append(current.strip())
                current = ""
    return commands


def synthetic_mat_store(path, *, seed: int, n: int, d: int, signal, accuracy: float, provenance=None):
    """A store of n rows over 2 modalities x 2 anatomies x 2 tasks and a binary label, Z ~ N(0, I_d)
    with coordinate j shifted by w where column c equals v, for each (c, v, w) of `signal`, and
    answers right with probability `accuracy`; layer "4", pool "last". Returns the path."""
    import numpy as np

    from matprobe.store import EmbeddingStore

    rng = np.random.default_rng(seed)
    m, a, t = (rng.choice(v, n) for v in (["CT", "MRI"], ["Lung", "Brain"], ["Cls", "Det"]))
    y = rng.integers(0, 2, n)
    z = rng.normal(size=(n, d)).astype("float32")
    columns = {"modality": m, "anatomy": a, "task": t, "label": y}
    for j, (column, value, weight) in enumerate(signal):
        z[:, j] += weight * (columns[column] == value)
    pred = np.where(rng.random(n) < accuracy, y, 1 - y)
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)],
                               {"modality": m, "anatomy": a, "task": t, "label": np.array(["no", "yes"])[y]},
                               {("4", "last"): z},
                               answers={"pred": pred, "correct": (pred == y).astype("int8"),
                                        "probs": np.eye(2)[pred].astype("float32")},
                               provenance=provenance).close()
    return path


def mi_cli_on_synthetic_store(tmp_path, *flags, seed: int, n: int, modality_shift: float = 2.0, seeds: int = 1):
    """`matprobe mi --factors M,A` (3 folds, no PCA, `seeds` seeds) plus `flags` on a `synthetic_mat_store`
    whose first coordinate is shifted by `modality_shift` for CT: modality is in Z, anatomy is not.
    Returns (the CliRunner result, the results JSON it wrote, the store's path)."""
    import json

    from typer.testing import CliRunner

    from matprobe.cli import app

    store = synthetic_mat_store(tmp_path / "s.h5", seed=seed, n=n, d=6, signal=[("modality", "CT", modality_shift)],
                                accuracy=0.7)
    out = tmp_path / "mi.json"
    res = CliRunner(env={"COLUMNS": "250"}).invoke(
        app, ["mi", str(store), "--factors", "M,A", "--seeds", str(seeds), "--folds", "3", "--pca", "0",
              *map(str, flags), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return res, json.loads(out.read_text()), store


def linear_critic_log_q(x1, w_lin, log_prior, y) -> np.ndarray:
    """log q(y|x) of the linear critic, logits [x,1] W + log prior, from numpy in float64: what a
    critic level's parameterisation must give at its linear start (the ladder's levels nest it)."""
    logits = np.asarray(x1, dtype=np.float64) @ w_lin + log_prior
    logq = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    return logq[np.arange(len(logq)), np.asarray(y)]


def two_term_stores(root, sep_a, sep_b, n=400, seed=3):
    """Two stores of the same n samples (a.h5, b.h5) for `compare`: T's class sits at ±sep on Z_1 (sep
    8: separable, at its entropy cap), M's at ±1.5 on Z_2."""
    from matprobe.store import EmbeddingStore

    rng = np.random.default_rng(seed)
    m, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    ids = [f"s{i:04d}" for i in range(n)]
    paths = []
    for name, sep in (("a", sep_a), ("b", sep_b)):
        z = rng.standard_normal((n, 2)).astype(np.float32)
        z[:, 0] += sep * (2 * t - 1)
        z[:, 1] += 1.5 * (2 * m - 1)
        path = root / f"{name}.h5"
        EmbeddingStore.from_arrays(path, ids, {"M": [f"m{v}" for v in m], "T": [f"t{v}" for v in t]},
                                   {("3", "last"): z}, overwrite=True).close()
        paths.append(path)
    return paths
