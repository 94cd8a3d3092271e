"""envd.yaml's parser: one method per key, on the YAML node accessors and the requirements
section; `parse_spec` is the entry point (pure: files are read only through callbacks).

`_Parser` reads the document and its `version`; the other keys' methods live in its parts:
`spec_image.ImageSections` (name, base, python, cuda, gpu), `spec_sections.PackageSections`
(build, project, system, packages, constraints, indexes), `spec_sections.RunSections` (env,
setup, start, runs, ports) and `spec_requirements.RequirementsSection` (requirements)."""

from __future__ import annotations

import yaml

from envd.errors import SpecError
from envd.model.spec import (
    KEYS,
    SCHEMA_VERSION,
    IsFile,
    ReadText,
    Spec,
)
from envd.model.spec_image import ImageSections
from envd.model.spec_project import member_requirements, project_requirements
from envd.model.spec_requirements import RequirementsSection
from envd.model.spec_sections import _DECIMAL, PackageSections, RunSections
from envd.model.yamlnodes import (
    compose,
    node_kind,
    show,
)


class _Parser(ImageSections, PackageSections, RunSections, RequirementsSection):
    def __init__(
        self,
        source: str,
        project_dir: str,
        read_text: ReadText | None,
        is_file: IsFile | None = None,
    ) -> None:
        self.source = source
        self.project_dir = project_dir
        self.read_text = read_text
        self.is_file = is_file

    # -------------------------------------------------------- the document

    def parse(self, text: str) -> Spec:
        root = compose(text, self.source)
        if root is None:
            raise SpecError(
                "the file is empty",
                file=self.source,
                line=1,
                key_path="(top)",
                hint="start from a template: `envctl init --list`",
            )
        if not isinstance(root, yaml.MappingNode):
            raise self.error(
                f"expected a mapping of settings at the top, found {node_kind(root)}",
                root,
                "(top)",
                hint="see `envctl init --list` for examples",
            )
        fields = self.mapping(root, "", KEYS)
        values = {key: value for key, (_, value) in fields.items()}
        version = self.version(values.get("version"))
        python = self.python(values.get("python"))
        name = self.name(values.get("name"))
        base = self.base_for(values.get("base"), python, values.get("python"), root)
        read = self.requirements(values.get("requirements"), has_project="project" in values)
        if read.unpinned_members:
            node = values["requirements"]
            read = read.plus(member_requirements(self, self.is_file, node, read))
        project = self.project(values.get("project"))
        if project is not None:
            read = read.plus(project_requirements(self, self.is_file, values["project"], read))
        elif read.root_project is not None and "project" not in values:
            # `uv sync` installs the root project of a uv.lock that marks it editable; so
            # does envd (a virtual root, `[tool.uv] package = false`, is not installed).
            project = "editable"
            node = values["requirements"]
            read = read.plus(
                project_requirements(self, self.is_file, node, read, key="requirements")
            )
        packages, direct = self.packages(values.get("packages"))
        from_source = self.build(values.get("build"))
        self.check_direct(direct + read.direct, from_source)
        files, requirements = read.files, read.requirements
        steps = self.setup(values.get("setup"))
        indexes = list(self.indexes(values.get("indexes")))
        indexes += [i for i in read.indexes if i not in indexes]
        return Spec(
            project_dir=self.project_dir,
            name=name,
            base=base,
            python=python,
            system=tuple(self.system(values.get("system"))),
            packages=packages,
            requirements_file=files[0] if files else None,
            requirements=requirements,
            indexes=tuple(indexes),
            gpu=self.gpu(values.get("gpu")),
            cuda=self.cuda(values.get("cuda")),
            env=self.env(values.get("env")),
            setup=tuple(step.run for step in steps),
            ports=self.ports(values.get("ports")),
            watch=self.boolean(values["watch"], "watch") if "watch" in values else True,
            version=version,
            requirements_files=files,
            constraints=self.pep508_list(values.get("constraints"), "constraints")
            + read.constraints,
            overrides=self.pep508_list(values.get("overrides"), "overrides"),
            project=project,
            members=read.members,
            runs=self.runs(values.get("runs")),
            setup_steps=steps,
            start=self.start(values.get("start")),
            from_source=from_source,
            pins=read.pins,
            direct=direct + read.direct,
            computed=read.computed,
        )

    def version(self, node: yaml.Node | None) -> int:
        if node is None:
            return SCHEMA_VERSION
        value = self.scalar(node, "version", "int", "the number 1")
        if not _DECIMAL.match(value) or len(value) > 6 or int(value) != SCHEMA_VERSION:
            raise self.error(
                f"unsupported schema version {show(value)}; "
                f"this envd reads version {SCHEMA_VERSION}",
                node,
                "version",
                hint="upgrade envd, or set `version: 1`",
            )
        return SCHEMA_VERSION


def parse_spec(
    text: str,
    *,
    source: str,
    project_dir: str,
    read_text: ReadText | None = None,
    is_file: IsFile | None = None,
) -> Spec:
    """Parse and validate envd.yaml text (pure: files are read only through the callbacks)."""
    return _Parser(source, project_dir, read_text, is_file).parse(text)
