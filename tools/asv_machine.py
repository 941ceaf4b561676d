"""Register this machine with asv under a name that carries its GPU, and print the name.

asv's machine info has no GPU field, so two hosts with the same CPU but
different GPUs would look alike in the dashboard. This names the machine
``<host>-<gpu>`` (``<host>-cpu`` without CUDA) and stores the GPU as an extra
``gpu`` field in ~/.asv-machine.json; asv copies every field of that entry into
each result, so ``asv publish`` offers ``gpu`` as a filter beside ``cpu``.

    asv run --machine "$(python tools/asv_machine.py)" ...

Results from several machines merge in one dashboard: copy each machine's
``.asv/results/<machine>/`` folder into one results directory and run
``asv publish`` there.
"""

from __future__ import annotations

import re

from asv.machine import Machine, MachineCollection

from persample_bench.hardware import gpu_name


def machine_entry(gpu: str | None) -> dict[str, str]:
    """asv's own defaults for this host, renamed after ``gpu`` and with it recorded."""
    entry = Machine.get_defaults()
    slug = re.sub(r"[^a-z0-9]+", "-", (gpu or "cpu").lower()).strip("-")
    entry["machine"] = f"{entry['machine']}-{slug}"
    entry["gpu"] = gpu or "none"
    return entry


def main() -> None:
    entry = machine_entry(gpu_name())
    MachineCollection.save(entry["machine"], entry)
    print(entry["machine"])


if __name__ == "__main__":
    main()
