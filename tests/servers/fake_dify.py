"""A stand-in for Dify's console API (Dify itself cannot run here): setup, login with
cookies and a CSRF token, plugin list, package upload, install and task polling. It computes
a package's identifier itself, the way the plugin daemon does, independently of dify-bundle.

usage: fake_dify.py PORT
"""
import hashlib
import io
import json
import re
import sys
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer

STATE = {"setup": None, "uploaded": {}, "installed": [], "tasks": {}, "polls": 0}
CSRF = "csrf-123"
ACCESS = "access-456"


def identifier(package: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(package)) as z:
        files = {i.filename: z.read(i.filename) for i in z.infolist() if not i.is_dir()}
    manifest = files["manifest.yaml"].decode()
    field = lambda k: re.search(rf"^{k}:\s*\"?([^\"\n]+)\"?", manifest, re.M).group(1).strip()
    data = b"".join(
        hashlib.sha256(name.encode()).digest() + hashlib.sha256(files[name]).digest()
        for name in sorted(files)
    )
    checksum = hashlib.sha256(data).hexdigest()
    return f"{field('author')}/{field('name')}:{field('version')}@{checksum}"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body, cookies=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)

    def authed(self, write):
        cookie = self.headers.get("Cookie", "")
        ok = f"access_token={ACCESS}" in cookie
        if write:
            ok = ok and self.headers.get("X-CSRF-Token") == CSRF
        if not ok:
            self.reply(401, {"code": "unauthorized"})
        return ok

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/console/api/setup":
            return self.reply(200, {"step": "finished" if STATE["setup"] else "not_started"})
        if not self.authed(False):
            return
        if path == "/console/api/workspaces/current/plugin/list":
            plugins = [{"plugin_unique_identifier": i} for i in STATE["installed"]]
            return self.reply(200, {"plugins": plugins, "total": len(plugins)})
        m = re.match(r"^/console/api/workspaces/current/plugin/tasks/(\w+)$", path)
        if m:
            STATE["polls"] += 1
            task = STATE["tasks"][m.group(1)]
            if STATE["polls"] < 2:
                return self.reply(200, {"task": {"status": "running", "plugins": []}})
            STATE["installed"].extend(task)
            return self.reply(200, {"task": {"status": "success", "plugins": []}})
        self.reply(404, {"code": "not_found"})

    def do_POST(self):
        path = self.path
        if path == "/console/api/setup":
            STATE["setup"] = json.loads(self.body())
            return self.reply(201, {"result": "success"})
        if path == "/console/api/login":
            args = json.loads(self.body())
            setup = STATE["setup"] or {}
            if args.get("email") != setup.get("email") or args.get("password") != setup.get("password"):
                return self.reply(401, {"code": "authentication_failed"})
            return self.reply(
                200,
                {"result": "success"},
                [f"access_token={ACCESS}; HttpOnly; Path=/", f"csrf_token={CSRF}; Path=/"],
            )
        if not self.authed(True):
            return
        if path == "/console/api/workspaces/current/plugin/upload/pkg":
            raw = self.body()
            boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
            part = [p for p in raw.split(b"--" + boundary) if b'name="pkg"' in p][0]
            package = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
            ident = identifier(package)
            STATE["uploaded"][ident] = package
            return self.reply(200, {"unique_identifier": ident, "manifest": {}})
        if path == "/console/api/workspaces/current/plugin/install/pkg":
            ids = json.loads(self.body())["plugin_unique_identifiers"]
            if any(i not in STATE["uploaded"] for i in ids):
                return self.reply(400, {"code": "not_uploaded"})
            task = f"task{len(STATE['tasks']) + 1}"
            STATE["tasks"][task] = ids
            STATE["polls"] = 0
            return self.reply(200, {"all_installed": False, "task_id": task})
        self.reply(404, {"code": "not_found"})


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
