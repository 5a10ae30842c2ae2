"""The benchmark gives each method the numbers of its own chapter, at the same scale and seed.

Each chapter's smoke setting is a benchmark ``Setting`` (:data:`fuhelpers.benchmark.chapters.CHAPTERS`).
The benchmark's code path (its data split, pre-training, method runners with their options, and its one
``measure``) is run on it and compared with the chapter's committed record, ``results/<stem>.json``, which
the chapter's notebook writes (and nbval re-executes). The records come from the offline data, so without
it the comparison is skipped. Threads are set to the record's: float sums depend on them.
"""
import pytest
import torch

from fuhelpers import data
from fuhelpers.benchmark.chapters import CHAPTERS, agreement, chapter_record

TOLERANCE = 1e-9  # the same computations in the same order: equal up to float printing


def needed_dataset(check):
    return "mnist" if check.setting.dataset == "rotated_mnist" else check.setting.dataset


@pytest.mark.parametrize("stem", sorted(CHAPTERS))
def test_benchmark_reproduces_the_chapter(stem):
    check = CHAPTERS[stem]
    if needed_dataset(check) not in data.available_datasets(present_only=True):
        pytest.skip(f"the committed record of {stem} was made on offline {needed_dataset(check)}, not here")
    threads = torch.get_num_threads()
    from fuhelpers import results as results_io
    torch.set_num_threads(int(results_io.load_results(stem, "smoke")["provenance"]["threads"]))
    try:
        table = agreement(check)
    finally:
        torch.set_num_threads(threads)
    assert len(table) == len(check.methods) * len(check.measures)
    worst = table.abs_diff.idxmax()
    assert table.abs_diff.max() <= TOLERANCE, f"{stem}: {worst} differs\n{table.round(4)}"


def test_every_method_chapter_has_a_check():
    chapters = {"02_tis", "03_not", "04_foul", "05_dpul"}
    assert set(CHAPTERS) == chapters
    for stem in chapters:  # the record holds every method and measure the check compares
        record = chapter_record(CHAPTERS[stem])
        for method in CHAPTERS[stem].methods:
            assert set(CHAPTERS[stem].measures) <= set(record[method]), (stem, method)
