"""Project RPCs: add, list, remove, init, templates, validate."""

from __future__ import annotations

import grpc

from envd.daemon.rpc import RpcBase, project_msg
from envd.v1 import envd_pb2 as pb


class ProjectsRpc(RpcBase):
    # ------------------------------------------------------------ projects

    def AddProject(
        self, request: pb.AddProjectRequest, context: grpc.ServicerContext
    ) -> pb.Project:
        from pathlib import Path

        return project_msg(self.services.projects.add(Path(request.path)))

    def ListProjects(
        self, request: pb.ListProjectsRequest, context: grpc.ServicerContext
    ) -> pb.ListProjectsReply:
        return pb.ListProjectsReply(
            projects=[project_msg(r) for r in self.services.projects.list()]
        )

    def RemoveProject(
        self, request: pb.ProjectRef, context: grpc.ServicerContext
    ) -> pb.RemoveProjectReply:
        return pb.RemoveProjectReply(
            project=project_msg(self.services.projects.remove(request.ref))
        )

    def InitProject(
        self, request: pb.InitProjectRequest, context: grpc.ServicerContext
    ) -> pb.InitProjectReply:
        from pathlib import Path

        directory = Path(request.directory)
        adopted = self.services.adoption.adopt_into(directory, request.template)
        row = self.services.projects.init(directory, request.template, written=adopted is not None)
        if adopted is None:
            return pb.InitProjectReply(
                project=project_msg(row), template=request.template or "default"
            )
        return pb.InitProjectReply(
            project=project_msg(row),
            adopted=True,
            template=request.template,
            notes=list(adopted.notes),
            warnings=list(adopted.warnings),
            files=list(adopted.files),
        )

    def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.ServicerContext
    ) -> pb.ListTemplatesReply:
        from envd.services.templates import list_templates

        return pb.ListTemplatesReply(
            templates=[
                pb.Template(name=t.name, description=t.description) for t in list_templates()
            ]
        )

    def Validate(self, request: pb.ProjectRef, context: grpc.ServicerContext) -> pb.ValidateReply:
        row = self.services.projects.resolve(request.ref)
        self.services.projects.spec(row)
        from envd.model.spec import SPEC_FILENAME

        return pb.ValidateReply(project=project_msg(row), spec_path=f"{row.path}/{SPEC_FILENAME}")
