"""A stand-in for the Dify plugin daemon behind the real Dify API in tests: only the calls
Dify 1.13.3 makes to upload, install and list plugins (api/core/plugin/impl/plugin.py), answered
the way langgenius/dify-plugin-daemon at tag 0.5.3 answers them. Each behaviour names the
daemon file it follows (all at tag 0.5.3). What it cannot do is run the plugin: an install job
that the daemon would hand to its local runtime here succeeds after a short delay.

usage: plugin_daemon.py PORT OFFICIAL_KEY_PEM
environment (the daemon's own names, internal/types/app/config.go):
  SERVER_KEY (required), FORCE_VERIFYING_SIGNATURE (default true),
  THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED (default false),
  THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS (comma-separated PEM paths),
  MAX_PLUGIN_PACKAGE_SIZE (default 52428800, internal/types/app/default.go)
"""
import base64
import datetime
import fnmatch
import hashlib
import io
import json
import os
import posixpath
import re
import sys
import threading
import time
import uuid
import zipfile
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

SERVER_KEY = os.environ["SERVER_KEY"]
FORCE_VERIFYING = os.environ.get("FORCE_VERIFYING_SIGNATURE", "true").lower() == "true"
THIRD_PARTY = os.environ.get("THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED", "false").lower() == "true"
THIRD_PARTY_KEYS = [
    p for p in os.environ.get("THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS", "").split(",") if p.strip()
]
MAX_PACKAGE = int(os.environ.get("MAX_PLUGIN_PACKAGE_SIZE", "52428800"))

# pkg/entities/plugin_entities/identity.go: the identifier's shape.
IDENTIFIER = re.compile(
    r"^(?:([a-z0-9_-]{1,64})\/)?([a-z0-9_-]{1,255}):([0-9]{1,4})(\.[0-9]{1,4}){1,3}(-\w{1,16})?@[a-f0-9]{32,64}$"
)
# pkg/entities/plugin_entities/plugin_declaration.go: AuthorRegex, PluginNameRegex.
AUTHOR = re.compile(r"^[a-z0-9_-]{1,64}$")
NAME = re.compile(r"^[a-z0-9_-]{1,128}$")
UUID_LIKE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

LOCK = threading.Lock()
PACKAGES = {}  # identifier -> declaration (internal/core/plugin_manager/packages.go SavePackage)
VERIFICATIONS = {}  # identifier -> the verification record upload returned
PLUGINS = set()  # identifiers with a runtime installed (models.Plugin)
INSTALLATIONS = {}  # (tenant, plugin_id) -> installation (models.PluginInstallation)
TASKS = {}  # id -> task (internal/types/models/task.go)


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Refused(Exception):
    pass


def load_key(path):
    with open(path.strip(), "rb") as f:
        data = f.read()
    # pkg/utils/encryption: PKCS#1 "RSA PUBLIC KEY" PEM.
    return serialization.load_pem_public_key(data)


OFFICIAL = None


class Package:
    """pkg/plugin_packager/decoder/zip.go (ZipPluginDecoder) and helper.go."""

    def __init__(self, data):
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as e:
            # zip.go newZipPluginDecoder: the zip error with "zip" replaced by "difypkg".
            raise Refused(str(e).replace("zip", "difypkg"))
        self.entries = self.zip.infolist()  # central-directory order, duplicates included
        # zip.go NewZipPluginDecoderWithSizeLimit: total uncompressed size.
        total = 0
        for entry in self.entries:
            total += entry.file_size
            if total > MAX_PACKAGE:
                raise Refused(
                    "plugin package size is too large, please ensure the uncompressed size is less than "
                    f"{MAX_PACKAGE} bytes"
                )
        self.comment = self.zip.comment

    def read(self, name):
        # zip.go ReadFile opens by name through io/fs: a name must be a valid fs path (no
        # directory entries, no "./", no leading "/"); with duplicate names Go's lookup finds
        # one of them, so every duplicate must hold the same bytes to be read consistently.
        name = posixpath.normpath(name) if name else name
        matches = [e for e in self.entries if e.filename == name]
        if not matches or name.endswith("/"):
            raise Refused(f"open {name}: file does not exist")
        contents = {self.zip.read(e) for e in matches}
        if len(contents) != 1:
            raise Refused(f"{name}: duplicate entries with different contents")
        return contents.pop()

    def yaml(self, name):
        try:
            return yaml.safe_load(self.read(name))
        except yaml.YAMLError as e:
            raise Refused(f"failed to unmarshal {name}: {e}")

    def checksum(self):
        # decoder/checksum.go CalculateChecksum: sha256 over sorted (sha256(path), sha256(content)).
        sums = {}
        for entry in self.entries:
            sums[entry.filename] = hashlib.sha256(self.read(entry.filename)).digest()
        data = b"".join(hashlib.sha256(k.encode()).digest() + sums[k] for k in sorted(sums))
        return hashlib.sha256(data).hexdigest()

    def verified(self):
        # decoder/helper.go verified + verifier.go VerifyPluginWithPublicKeys: the 32-byte
        # sha256 of every entry in central-directory order, then the time in decimal; RSA
        # PKCS#1 v1.5 / SHA-256; the official key, plus third-party keys when enabled.
        try:
            meta = json.loads(self.comment or b"")
            signature = base64.b64decode(meta.get("signature", ""), validate=True)
            created = int(meta.get("time", 0))
            data = b"".join(hashlib.sha256(self.read(e.filename)).digest() for e in self.entries)
            data += str(created).encode()
        except (ValueError, Refused, TypeError, AttributeError):
            return False
        keys = [OFFICIAL]
        if THIRD_PARTY and THIRD_PARTY_KEYS:
            keys += [load_key(p) for p in THIRD_PARTY_KEYS]
        for key in keys:
            try:
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
                return True
            except InvalidSignature:
                continue
        return False

    def verification(self):
        # zip.go decode/Verification + plugin_decoder.go: the record when verified; a verified
        # package without one is langgenius (decoder.DefaultVerification).
        if not self.verified():
            return None
        try:
            record = json.loads(self.read(".verification.dify.json"))
        except Refused:
            return {"authorized_category": "langgenius"}
        return record

    def declaration(self):
        """decoder/helper.go Manifest: manifest.yaml with each provider file loaded in."""
        manifest = self.yaml("manifest.yaml")
        if not isinstance(manifest, dict):
            raise Refused("manifest.yaml is not a mapping")
        plugins = manifest.get("plugins") or {}

        def provider(path, list_key, out_key):
            dec = self.yaml(path)
            files = dec.pop(list_key, None) or []
            dec[out_key] = [self.yaml(f) for f in files]
            return dec

        for path in plugins.get("tools") or []:
            manifest["tool"] = provider(path, "tools", "tools")
        for path in plugins.get("endpoints") or []:
            manifest["endpoint"] = provider(path, "endpoints", "endpoints")
        for path in plugins.get("agent_strategies") or []:
            manifest["agent_strategy"] = provider(path, "strategies", "strategies")
        for path in plugins.get("datasources") or []:
            manifest["datasource"] = provider(path, "datasources", "datasources")
        for path in plugins.get("triggers") or []:
            manifest["trigger"] = provider(path, "events", "events")
        for path in plugins.get("models") or []:
            dec = self.yaml(path)
            files = dec.pop("models", None) or {}
            patterns, position = [], {}
            for kind, spec in files.items():
                spec = spec or {}
                patterns += spec.get("predefined") or []
                if spec.get("position"):
                    position[kind] = self.yaml(spec["position"])
            models = []
            for entry in self.entries:
                if entry.filename.endswith("_position.yaml"):
                    continue
                if any(fnmatch.fnmatchcase(entry.filename, p) for p in patterns):
                    models.append(self.yaml(entry.filename))
            dec["models"] = models
            if position:
                dec["position"] = position
            manifest["model"] = dec
        # plugin_declaration.go FillInDefaultValues.
        manifest.setdefault("tags", [])
        if manifest.get("tool"):
            identity = manifest["tool"].setdefault("identity", {})
            if not (identity.get("description") or {}).get("en_US"):
                identity["description"] = manifest.get("description")
            if not identity.get("tags"):
                identity["tags"] = manifest["tags"]
        if manifest.get("model") and manifest["model"].get("description") is None:
            manifest["model"]["description"] = manifest.get("description")
        manifest["verified"] = self.verified()
        self.manifest_validate(manifest)
        return json.loads(json.dumps(manifest, default=lambda v: v.isoformat()))

    @staticmethod
    def manifest_validate(m):
        # plugin_declaration.go ManifestValidate.
        if not AUTHOR.match(str(m.get("author", ""))):
            raise Refused("author must be alphanumeric and less than 64 characters: ^[a-z0-9_-]{1,64}$")
        if not NAME.match(str(m.get("name", ""))):
            raise Refused("plugin name must be alphanumeric and less than 128 characters: ^[a-z0-9_-]{1,128}$")
        kinds = [k for k in ("endpoint", "model", "tool", "agent_strategy", "datasource", "trigger") if m.get(k)]
        if not kinds:
            raise Refused(
                "at least one of endpoint, model, tool, agent_strategy, trigger, or datasource must be provided"
            )
        for alone in ("model", "agent_strategy", "datasource", "trigger"):
            if alone in kinds and len(kinds) > 1:
                raise Refused(f"{alone} cannot be provided with {', '.join(k for k in kinds if k != alone)}")

    def identifier(self, declaration):
        ident = f"{declaration['author']}/{declaration['name']}:{declaration['version']}@{self.checksum()}"
        if not IDENTIFIER.match(ident):
            raise Refused("plugin_unique_identifier is not valid: " + ident)
        return ident


def success(data):
    # pkg/entities/response.go NewSuccessResponse.
    return {"code": 0, "message": "success", "data": data}


def error(kind, code, message):
    # internal/types/exception/generic.go ToResponse: the message is the error as JSON.
    return {"code": code, "message": json.dumps({"message": message, "error_type": kind, "args": None}), "data": None}


def bad_request(message):
    return error("PluginDaemonBadRequestError", -400, message)


def multipart(content_type, raw):
    """A multipart/form-data body: name -> (filename or None, bytes)."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    fields = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def upload(tenant, form):
    """internal/server/controllers/plugins.go UploadPlugin, internal/service/plugin_decoder.go UploadPluginPkg."""
    # gin's FormFile: only a part with a file name is a file.
    filename, data = form.get("dify_pkg", (None, b""))
    if not filename:
        return bad_request("http: no such file")
    if len(data) > MAX_PACKAGE:
        return bad_request("file size exceeds the maximum limit")
    verify = form.get("verify_signature", (None, b""))[1] == b"true"
    try:
        package = Package(data)
        declaration = package.declaration()
        ident = package.identifier(declaration)
    except Refused as e:
        return bad_request(str(e))
    if UUID_LIKE.match(declaration["author"]):
        return bad_request("cannot set author to an UUID")
    if (FORCE_VERIFYING or verify) and not declaration["verified"]:
        return bad_request(
            "plugin verification has been enabled, and the plugin you want to install has a bad signature"
        )
    verification = package.verification()
    with LOCK:
        PACKAGES[ident] = declaration
        VERIFICATIONS[ident] = verification
    return success({"unique_identifier": ident, "manifest": declaration, "verification": verification})


def plugin_id(ident):
    return ident.split(":")[0]


def install(tenant, body):
    """controllers/plugins.go InstallPluginFromIdentifiers, service/install_plugin.go
    InstallMultiplePluginsToTenant, service/install_plugin_utils.go, tasks/install_plugin.go."""
    idents = body.get("plugin_unique_identifiers")
    if not isinstance(idents, list) or not idents or len(idents) > 64 or not body.get("source"):
        return bad_request("invalid request: plugin_unique_identifiers and source are required")
    if any(not isinstance(i, str) or not IDENTIFIER.match(i) for i in idents):
        return bad_request("invalid request: plugin_unique_identifier")
    metas = body.get("metas") or []
    if len(metas) != len(idents):
        return bad_request("the number of metas must be equal to the number of plugin unique identifiers")
    with LOCK:
        for ident in idents:
            if ident not in PACKAGES:
                # helper.CombinedGetPluginDeclaration finds no saved package.
                return error(
                    "PluginDaemonInternalServerError", -500, "record not found\nfailed to get plugin declaration"
                )
        if all(i in PLUGINS for i in idents):
            for i, ident in enumerate(idents):
                save_installation(tenant, ident, body["source"], metas[i] or {})
            return success({"all_installed": True, "task_id": ""})
        task_id = str(uuid.uuid4())
        TASKS[task_id] = {
            "id": task_id,
            "created_at": now(),
            "updated_at": now(),
            "status": "running",
            "tenant_id": tenant,
            "total_plugins": len(idents),
            "completed_plugins": 0,
            "plugins": [
                {
                    "plugin_unique_identifier": ident,
                    "plugin_id": plugin_id(ident),
                    "status": "pending",
                    "message": "",
                    "icon": PACKAGES[ident].get("icon", ""),
                    "icon_dark": PACKAGES[ident].get("icon_dark") or "",
                    "labels": PACKAGES[ident].get("label") or {},
                }
                for ident in idents
            ],
        }
    for i, ident in enumerate(idents):
        threading.Thread(target=job, args=(tenant, task_id, ident, body["source"], metas[i] or {})).start()
    return success({"all_installed": False, "task_id": task_id})


def set_status(task_id, ident, status, message):
    # tasks/install_plugin_utils.go SetTaskStatusForOnePlugin / UpdateTaskStatus.
    with LOCK:
        task = TASKS.get(task_id)
        if not task:
            return
        for plugin in task["plugins"]:
            if plugin["plugin_unique_identifier"] == ident:
                previous = plugin["status"]
                plugin["status"], plugin["message"] = status, message
                if status == "success" and previous != "success":
                    task["completed_plugins"] += 1
                if status == "failed":
                    task["status"] = "failed"
        if all(p["status"] == "success" for p in task["plugins"]):
            task["status"] = "success"
        task["updated_at"] = now()


def job(tenant, task_id, ident, source, meta):
    # tasks/install_plugin.go ProcessInstallJob: running "starting", then (after the runtime
    # is installed, which this stand-in does not do) the installation saved and "installed".
    set_status(task_id, ident, "running", "starting")
    time.sleep(float(os.environ.get("INSTALL_SECONDS", "2")))
    with LOCK:
        PLUGINS.add(ident)
        save_installation(tenant, ident, source, meta)
    set_status(task_id, ident, "success", "installed")


def save_installation(tenant, ident, source, meta):
    # tasks/install_plugin.go SaveInstallationForTenantToDB: one installation per plugin id.
    key = (tenant, plugin_id(ident))
    previous = INSTALLATIONS.get(key)
    INSTALLATIONS[key] = {
        "id": previous["id"] if previous else str(uuid.uuid4()),
        "created_at": previous["created_at"] if previous else now(),
        "updated_at": now(),
        "tenant_id": tenant,
        "plugin_unique_identifier": ident,
        "plugin_id": plugin_id(ident),
        "runtime_type": "local",
        "endpoints_setups": 0,
        "endpoints_active": 0,
        "source": source,
        "meta": meta,
    }


def list_plugins(tenant, query):
    """controllers/plugins.go ListPlugins, service/manage_plugin.go ListPlugins."""
    try:
        page, size = int(query["page"][0]), int(query["page_size"][0])
    except (KeyError, ValueError):
        return bad_request("invalid request: page and page_size are required")
    if page < 1 or not 1 <= size <= 256:
        return bad_request("invalid request: page >= 1, 1 <= page_size <= 256")
    with LOCK:
        mine = sorted((i for (t, _), i in INSTALLATIONS.items() if t == tenant), key=lambda i: i["created_at"])
        rows = []
        for inst in mine[(page - 1) * size : page * size]:
            declaration = PACKAGES[inst["plugin_unique_identifier"]]
            rows.append(
                {
                    **inst,
                    "name": declaration["name"],
                    "installation_id": inst["id"],
                    "declaration": declaration,
                    "version": declaration["version"],
                    "checksum": inst["plugin_unique_identifier"].rsplit("@", 1)[1],
                }
            )
        return success({"list": rows, "total": len(mine)})


def task(tenant, task_id):
    """controllers/plugins.go FetchPluginInstallationTask, service/install_task_service.go."""
    with LOCK:
        found = TASKS.get(task_id)
        if not found or found["tenant_id"] != tenant:
            return error("PluginDaemonInternalServerError", -500, "record not found")
        return success(json.loads(json.dumps(found)))


def decode(tenant, query):
    """service/decode_service.go DecodePluginFromIdentifier (Dify calls it before install): the
    package decoded again from storage, its verification as at upload."""
    ident = (query.get("plugin_unique_identifier") or [""])[0]
    if not IDENTIFIER.match(ident):
        return bad_request("invalid request: plugin_unique_identifier")
    with LOCK:
        declaration = PACKAGES.get(ident)
        verification = VERIFICATIONS.get(ident)
    if declaration is None:
        # manager.GetPackage finds nothing: a bad request there.
        return bad_request("record not found")
    return success({"unique_identifier": ident, "manifest": declaration, "verification": verification})


ROUTE = re.compile(r"^/plugin/([^/]+)/management/(.+)$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("plugin-daemon: " + (fmt % args) + "\n")

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self, method):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        # internal/server/middleware.go CheckingKey: X-Api-Key must equal SERVER_KEY, else 401.
        if self.headers.get("X-Api-Key") != SERVER_KEY:
            return self.reply(401, error("PluginDaemonUnauthorizedError", -401, "unauthorized"))
        m = ROUTE.match(url.path)
        if not m:
            return self.reply(404, {"code": -404, "message": "not found", "data": None})
        tenant, action = m.groups()
        query = parse_qs(url.query)
        # internal/server/http_server.go pluginManagementGroup.
        if method == "POST" and action == "install/upload/package":
            return self.reply(200, upload(tenant, multipart(self.headers.get("Content-Type", ""), raw)))
        if method == "POST" and action == "install/identifiers":
            try:
                body = json.loads(raw)
            except ValueError as e:
                return self.reply(200, bad_request(str(e)))
            return self.reply(200, install(tenant, body))
        if method == "GET" and action == "list":
            return self.reply(200, list_plugins(tenant, query))
        if method == "GET" and action.startswith("install/tasks/"):
            return self.reply(200, task(tenant, action[len("install/tasks/") :]))
        if method == "GET" and action == "decode/from_identifier":
            return self.reply(200, decode(tenant, query))
        self.log_message("not served by this stand-in: %s %s", method, url.path)
        self.reply(404, {"code": -404, "message": "not served by the stand-in", "data": None})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")


if __name__ == "__main__":
    OFFICIAL = load_key(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
