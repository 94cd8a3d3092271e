from envd.model.apt import parse_simulated_install
from envd.model.lockfile import DebianPackage

OUTPUT = """\
Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  git libgomp1
Inst libgomp1 (12.2.0-14 Debian:12.5/stable [amd64])
Inst git [1:2.39.1-1] (1:2.39.5-0+deb12u1 Debian-Security:12/stable-security [amd64])
Conf libgomp1 (12.2.0-14 Debian:12.5/stable [amd64])
"""


def test_parses_versions_and_upgrades() -> None:
    assert parse_simulated_install(OUTPUT) == (
        DebianPackage("git", "1:2.39.5-0+deb12u1", "amd64"),
        DebianPackage("libgomp1", "12.2.0-14", "amd64"),
    )


def test_nothing_to_install() -> None:
    assert parse_simulated_install("0 upgraded, 0 newly installed\n") == ()
