import threading
import time

from envd.model.spec import Base, Spec
from envd.services.watching import Debouncer, relevant_files


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


def test_relevant_files() -> None:
    spec = Spec(
        project_dir="/p", name="p", base=Base(debian="bookworm"), requirements_file="deps/req.txt"
    )
    assert relevant_files(spec) == {"envd.yaml", "envd.lock", "req.txt"}
    assert "requirements.txt" in relevant_files(None)
