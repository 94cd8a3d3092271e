import threading
import time

from envd.model.spec import Base, SetupStep, Spec
from envd.services.watching import Debouncer, folders_of, relevant_files


def test_a_burst_is_one_change() -> None:
    fired: list[str] = []
    done = threading.Event()

    def fire(key: str) -> None:
        fired.append(key)
        done.set()

    debounce = Debouncer(fire, delay=0.2)
    for _ in range(10):
        debounce.poke("p")
        time.sleep(0.01)
    assert done.wait(2)
    time.sleep(0.3)
    assert fired == ["p"]


def test_keys_are_independent() -> None:
    fired: list[str] = []
    debounce = Debouncer(fired.append, delay=0.05)
    debounce.poke("a")
    debounce.poke("b")
    time.sleep(0.3)
    assert sorted(fired) == ["a", "b"]


def test_relevant_files_are_every_input_of_the_lock_and_build() -> None:
    spec = Spec(
        project_dir="/p",
        name="p",
        base=Base(debian="bookworm"),
        requirements_file="deps/req.txt",
        requirements_files=("deps/req.txt", "deps/base.txt", "../shared/constraints.txt"),
        setup_steps=(SetupStep("bash postBuild", ("postBuild",)),),
        project="editable",
    )
    assert relevant_files("/p", spec) == {
        "/p/envd.yaml",
        "/p/envd.lock",
        "/p/deps/req.txt",
        "/p/deps/base.txt",
        "/shared/constraints.txt",
        "/p/postBuild",
        "/p/pyproject.toml",
    }
    assert folders_of(relevant_files("/p", spec)) == {"/p", "/p/deps", "/shared"}
    assert "/p/requirements.txt" in relevant_files("/p", None)
