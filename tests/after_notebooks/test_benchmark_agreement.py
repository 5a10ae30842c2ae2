"""The benchmark gives each method the numbers of its own chapter, at the same scale and seed.

Each chapter's smoke setting is a benchmark ``Setting`` (:data:`fuhelpers.benchmark.chapters.CHAPTERS`).
The benchmark's code path (its data split, pre-training, method runners with their options, and its one
``measure``) is run on it and compared with the chapter's committed record, ``results/<stem>.json``, which
the chapter's notebook writes. A seeded CPU run is bitwise reproducible only under the same numerics (CPU,
kernel caps, threads), so the comparison runs only on a record made here: ``make test`` runs this folder right
after nbval has re-executed every chapter, which rewrites the records on this machine. A record made elsewhere
(the committed one, on a fresh clone) is skipped with what differs; so is one made without the offline data.
Threads are set to the record's: float sums depend on them.
"""
import pytest
import torch

from fuhelpers import data
from fuhelpers import results as results_io
from fuhelpers.benchmark.chapters import CHAPTERS, agreement, chapter_record
from fuhelpers.device import same_numerics

TOLERANCE = 1e-9  # the same computations in the same order: equal up to float printing


def needed_dataset(check):
    return "mnist" if check.setting.dataset == "rotated_mnist" else check.setting.dataset


@pytest.mark.parametrize("stem", sorted(CHAPTERS))
def test_benchmark_reproduces_the_chapter(stem):
    check = CHAPTERS[stem]
    if needed_dataset(check) not in data.available_datasets(present_only=True):
        pytest.skip(f"the committed record of {stem} was made on offline {needed_dataset(check)}, not here")
    provenance = results_io.load_results(stem, "smoke")["provenance"]
    threads = torch.get_num_threads()
    torch.set_num_threads(int(provenance["threads"]))
    try:
        elsewhere = same_numerics(provenance)
        if elsewhere:
            pytest.skip(f"results/{stem}.json was made under other numerics ({elsewhere}): re-execute the chapter "
                        "here first (make nbval)")
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
