"""Validate real answers against Orb's OpenAPI document."""

import re

import requests
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

DOCUMENT_URI = "urn:orb:openapi"


class Checker:
    """Hold an OpenAPI document and check answers against its operations."""

    def __init__(self, document: dict) -> None:
        self.document = document
        resource = DRAFT202012.create_resource(document)
        self.registry = Registry().with_resource(DOCUMENT_URI, resource)

    def operation(self, method: str, path: str) -> dict:
        """Return the operation that routes `method path`."""
        for template, item in self.document["paths"].items():
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
            if re.fullmatch(pattern, path) and method.lower() in item:
                return item[method.lower()]

        raise AssertionError(f"{method} {path} is not documented")

    def resolve(self, node: dict) -> dict:
        """Follow local $refs to the node they name."""
        resolver = self.registry.resolver(DOCUMENT_URI)
        while "$ref" in node:
            node = resolver.lookup(DOCUMENT_URI + node["$ref"]).contents

        return node

    def check(self, response: requests.Response) -> None:
        """Assert that an answer is documented and its body validates."""
        request = response.request
        path = request.path_url.split("?", 1)[0]
        operation = self.operation(request.method, path)
        status = str(response.status_code)
        assert status in operation["responses"], (
            f"{request.method} {path} answered undocumented {status}"
        )

        answer = self.resolve(operation["responses"][status])
        for name in answer.get("headers", {}):
            assert name in response.headers, (
                f"{request.method} {path} {status} lacks {name}"
            )

        content = answer.get("content")
        if not content or request.method == "HEAD":
            return

        media = response.headers.get("Content-Type", "").split(";")[0]
        key = media if media in content else "*/*"
        assert key in content, f"{request.method} {path} sent {media}"
        if not key.endswith("json"):
            return

        validator = Draft202012Validator(
            anchored(content[key]["schema"]),
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        errors = list(validator.iter_errors(response.json()))
        assert not errors, f"{request.method} {path}: {errors[0].message}"


def anchored(schema):
    """Point the local $refs of a sub-schema at the whole document."""
    if isinstance(schema, dict):
        return {
            key: DOCUMENT_URI + value if key == "$ref" else anchored(value)
            for key, value in schema.items()
        }

    if isinstance(schema, list):
        return [anchored(item) for item in schema]

    return schema
