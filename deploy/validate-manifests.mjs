// Offline check of the Kubernetes manifests in deploy/k8s (run by deploy/lint.sh).
//
//   NODE_PATH=<dir with node_modules> node deploy/validate-manifests.mjs FILE.yaml...
//
// Needs the npm packages kubernetes-models (4.x: Node >= 14) and yaml; lint.sh installs them.
// For every YAML document:
//   * apiVersion, kind and metadata.name must be there (also for custom resources);
//   * built-in kinds (v1 Pod, apps/v1 Deployment, ...) are validated with kubernetes-models'
//     JSON schemas (types, required fields, enums), and checked for UNKNOWN fields (a typo such
//     as `capabilites` is not a schema error in kubernetes-models) by walking the field lists
//     of its TypeScript declarations;
//   * every volumeMount must name a volume of its pod;
//   * Mutation (apps.dominodatalab.com/v1alpha1, domsed): rule keys must be known to domsed's
//     CRD; inserted volumes, volume mounts, env and security contexts are checked as the
//     Kubernetes types they become; mounts must name a volume the Mutation inserts;
//   * the Mutation applied to Domino's pods (deploy/testdata/pods.yaml) together with the irsa
//     chart's own (deploy/testdata/chart-1.8.0-mutation.yaml), in either order, and with
//     domsed's container-wide rules reaching init containers or not (domsed's documentation
//     does not say): every resulting pod must be a valid Pod (schema, unknown fields, unique
//     volumes and mount paths, Bidirectional only when privileged, restartPolicy only on init
//     containers), its workload containers must keep their security context and see the
//     sidecar's mount (HostToContainer), and the config's link must resolve, in the workload,
//     to the file the sidecar mounts;
//   * Kustomization: its resources must exist.
// Exit status 1 on any finding, listing them all.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), "x.js"));
const YAML = require("yaml");

const findings = [];
const report = (file, where, msg) => findings.push(`${file}: ${where}: ${msg}`);

// ------------------------------------------------------------------------------------------
// Unknown fields, from kubernetes-models' declarations
// ------------------------------------------------------------------------------------------

const modelsDir = path.dirname(require.resolve("kubernetes-models/package.json"));
const declCache = new Map();

function readDecl(file) {
  if (!declCache.has(file)) {
    declCache.set(file, fs.existsSync(file) ? fs.readFileSync(file, "utf8") : null);
  }
  return declCache.get(file);
}

function resolveImport(fromFile, spec) {
  if (spec.startsWith(".")) return path.resolve(path.dirname(fromFile), spec) + ".d.ts";
  try {
    const js = require.resolve(spec);
    return js.replace(/\.(c|m)?js$/, ".d.ts");
  } catch {
    return null;
  }
}

// { fields: Map(name -> {type, required}), file } for interface `name` declared or imported in
// `file`, or null when it cannot be found (then nothing is checked below it).
const ifaceCache = new Map();
function iface(file, name) {
  const key = `${file}#${name}`;
  if (ifaceCache.has(key)) return ifaceCache.get(key);
  ifaceCache.set(key, null);
  const text = readDecl(file);
  if (text === null) return null;
  let result = null;
  // Re-exported under another name: export { IPodSpec as IIoK8sApiCoreV1PodSpec, ... }
  let local = name;
  for (const m of text.matchAll(/export \{([^}]*)\}/g)) {
    for (const part of m[1].split(",")) {
      const [a, b] = part.trim().split(/\s+as\s+/);
      if (b === name) local = a;
    }
  }
  const start = text.indexOf(`export interface ${local} `);
  if (start >= 0) {
    const body = text.slice(text.indexOf("{", start) + 1, text.indexOf("\n}", start));
    const fields = new Map();
    for (const line of body.split("\n")) {
      const m = line.match(/^ {4}"([^"]+)"(\?)?: (.*?);?$/);
      if (m) fields.set(m[1], { type: m[3], required: !m[2] });
    }
    result = { fields, file };
  } else {
    // Imported from elsewhere: import { X } from "./File";
    for (const m of text.matchAll(/import \{([^}]*)\} from "([^"]+)";/g)) {
      const names = m[1].split(",").map((s) => s.trim());
      if (names.includes(name)) {
        const target = resolveImport(file, m[2]);
        if (target) result = iface(target, name);
      }
    }
  }
  ifaceCache.set(key, result);
  return result;
}

function checkUnknown(value, typeStr, ctxFile, where, file) {
  if (value === null || value === undefined) return;
  typeStr = typeStr.trim();
  const arr = typeStr.match(/^Array<(.*)>$/);
  if (arr) {
    if (Array.isArray(value)) value.forEach((v, i) => checkUnknown(v, arr[1], ctxFile, `${where}[${i}]`, file));
    return;
  }
  if (!/^I[A-Za-z0-9]+$/.test(typeStr)) return;  // a primitive, a union, a map: schema's job
  const def = iface(ctxFile, typeStr);
  if (!def || typeof value !== "object" || Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    const f = def.fields.get(k);
    if (!f) {
      const known = [...def.fields.keys()].join(", ");
      report(file, `${where}.${k}`, `unknown field (known here: ${known})`);
      continue;
    }
    checkUnknown(v, f.type, def.file, `${where}.${k}`, file);
  }
}

// Check `value` as object metadata (the type is imported by v1/Pod.d.ts).
function checkMeta(value, where, file) {
  checkUnknown(value, "IIoK8sApimachineryPkgApisMetaV1ObjectMeta", path.join(modelsDir, "v1", "Pod.d.ts"), where, file);
}
// Core v1 types by their short names, through their own declaration files.
function coreTypeName(short) {
  const text = readDecl(path.join(modelsDir, "v1", `${short}.d.ts`));
  const m = text && text.match(/export \{ I\w+ as (I\w+),/);
  return m ? { name: m[1], file: path.join(modelsDir, "v1", `${short}.d.ts`) } : null;
}
function checkAs(value, short, where, file) {
  const t = coreTypeName(short);
  if (!t) {
    report(file, where, `internal: no kubernetes-models type ${short}`);
    return;
  }
  checkUnknown(value, t.name, t.file, where, file);
}

// ------------------------------------------------------------------------------------------
// Schema validation with kubernetes-models
// ------------------------------------------------------------------------------------------

async function modelClass(apiVersion, kind) {
  const mod = `kubernetes-models/${apiVersion}`;
  try {
    return require(mod)[kind] || null;
  } catch {
    return null;
  }
}

async function validateModel(doc, where, file) {
  const Cls = await modelClass(doc.apiVersion, doc.kind);
  if (!Cls) return false;
  try {
    new Cls(doc).validate();
  } catch (e) {
    report(file, where, `schema: ${e.message}`);
  }
  const declFile = (() => {
    const mod = `kubernetes-models/${doc.apiVersion}/${doc.kind}`;
    try {
      return require.resolve(mod).replace(/\.(c|m)?js$/, ".d.ts");
    } catch {
      return null;
    }
  })();
  if (declFile) checkUnknown(doc, `I${doc.kind}`, declFile, where, file);
  return true;
}

async function validatePodSpec(spec, where, file) {
  const { Pod } = require("kubernetes-models/v1");
  const pod = { apiVersion: "v1", kind: "Pod", metadata: { name: "template" }, spec };
  try {
    new Pod(pod).validate();
  } catch (e) {
    report(file, where, `schema: ${e.message}`);
  }
  checkAs(spec, "PodSpec", where, file);
  checkVolumeRefs(spec, where, file);
}

function checkVolumeRefs(spec, where, file) {
  if (!spec || typeof spec !== "object") return;
  const volumes = new Set((spec.volumes || []).map((v) => v && v.name));
  for (const group of ["containers", "initContainers"]) {
    (spec[group] || []).forEach((c, i) => {
      (c.volumeMounts || []).forEach((vm, j) => {
        if (!volumes.has(vm.name)) {
          report(file, `${where}.${group}[${i}].volumeMounts[${j}]`, `no volume named '${vm.name}' in the pod`);
        }
      });
    });
  }
}

// ------------------------------------------------------------------------------------------
// Custom resources
// ------------------------------------------------------------------------------------------

// Rule keys of domsed's Mutation CRD (apps.dominodatalab.com/v1alpha1).
// Volumes the irsa chart (1.8.0) inserts in Workspace/Batch/Scheduled pods: a Mutation used
// with it may mount them.
const CHART_VOLUMES = ["aws-config-file", "aws-user-token", "irsa-logs", "podinfo"];

const MUTATION_RULE_KEYS = new Set([
  "labelSelectors", "hardwareTierIdSelector", "notHardwareTierIdSelector", "namespaceSelector",
  "notNamespaceSelector", "organizationSelector", "notOrganizationSelector", "usernameSelector",
  "notUsernameSelector", "projectSelector", "notProjectSelector", "sharedMemory", "matchBuilds",
  "userEvents", "istioProbeRewrite", "istioPortException", "autoscaling", "containerImageRewrite",
  "addToleration", "modifyStorageClass", "gpuToleration", "modifyAnnotation", "modifyLabel",
  "insertContainer", "resources", "efa", "insertVolumes", "insertExecutionJWT",
  "disableToolingProbe", "fuse", "serviceAccount", "insertVolumeMounts", "pvc", "modifyEnv",
  "enforceCpuLicenseLimit", "modifyHWTier", "labelModelOwner", "addClassName",
  "modifySecurityContext", "insertModelAffinity", "insertAffinity", "modifyWorkspacePorts",
  "setSharedDatasetsRW", "mlflowModelVolume", "cloudWorkloadIdentity",
  "terminationGracePeriodSeconds", "insertBuildArgs",
]);

async function validateMutation(doc, where, file) {
  if (!Array.isArray(doc.rules) || doc.rules.length === 0) {
    report(file, `${where}.rules`, "a Mutation needs a non-empty list of rules");
    return;
  }
  const inserted = new Set(CHART_VOLUMES);
  for (const r of doc.rules) for (const v of r.insertVolumes || []) inserted.add(v.name);
  for (const [i, r] of doc.rules.entries()) {
    const w = `${where}.rules[${i}]`;
    for (const k of Object.keys(r)) if (!MUTATION_RULE_KEYS.has(k)) report(file, `${w}.${k}`, "unknown Mutation rule key");
    if (r.labelSelectors && !(Array.isArray(r.labelSelectors) && r.labelSelectors.every((s) => typeof s === "string"))) {
      report(file, `${w}.labelSelectors`, "must be a list of strings");
    }
    if (r.modifyLabel && typeof r.modifyLabel.key !== "string") report(file, `${w}.modifyLabel.key`, "missing");
    if (r.insertVolumes) {
      await validatePodSpec({ containers: [{ name: "x", image: "x" }], volumes: r.insertVolumes }, `${w}.insertVolumes`, file);
    }
    if (r.insertVolumeMounts) {
      const vms = r.insertVolumeMounts.volumeMounts;
      if (!Array.isArray(vms)) report(file, `${w}.insertVolumeMounts.volumeMounts`, "must be a list");
      else {
        const volumes = [...inserted].map((name) => ({ name, emptyDir: {} }));
        await validatePodSpec({ containers: [{ name: "x", image: "x", volumeMounts: vms }], volumes },
          `${w}.insertVolumeMounts`, file);
      }
    }
    if (r.modifyEnv) {
      if (!Array.isArray(r.modifyEnv.env)) report(file, `${w}.modifyEnv.env`, "must be a list");
      else await validatePodSpec({ containers: [{ name: "x", image: "x", env: r.modifyEnv.env }] }, `${w}.modifyEnv`, file);
    }
    if (r.modifySecurityContext) {
      const ctx = r.modifySecurityContext.context;
      if (!ctx || typeof ctx !== "object") report(file, `${w}.modifySecurityContext.context`, "missing");
      else if (r.modifySecurityContext.containerSelector) {
        await validatePodSpec({ containers: [{ name: "x", image: "x", securityContext: ctx }] }, `${w}.modifySecurityContext`, file);
      } else {
        await validatePodSpec({ containers: [{ name: "x", image: "x" }], securityContext: ctx }, `${w}.modifySecurityContext`, file);
      }
    }
    if (r.insertContainer) {
      const c = r.insertContainer;
      if (!["init", "app"].includes(c.containerType)) report(file, `${w}.insertContainer.containerType`, "must be init or app");
      const volumes = [...inserted].map((name) => ({ name, emptyDir: {} }));
      const group = c.containerType === "init" ? "initContainers" : "containers";
      const spec = { containers: [{ name: "x", image: "x" }], volumes };
      spec[group] = [...(spec[group] || []), c.spec];
      if (c.spec) await validatePodSpec(spec, `${w}.insertContainer.spec`, file);
    }
  }
}

// ------------------------------------------------------------------------------------------
// The Mutation applied to Domino's pods
// ------------------------------------------------------------------------------------------

const TESTDATA = path.join(path.dirname(new URL(import.meta.url).pathname), "testdata");

function selectorMatches(sel, labels) {
  let m = sel.match(/^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$/);
  if (m) {
    const inSet = m[3].split(",").map((x) => x.trim()).includes(labels[m[1]]);
    return m[2] === "in" ? inSet : !inSet;
  }
  m = sel.match(/^\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*$/);
  if (m) return m[2] === "!=" ? labels[m[1]] !== m[3] : labels[m[1]] === m[3];
  throw new Error(`cannot read the label selector '${sel}'`);
}

// domsed, as far as its CRD and the chart tell: selectors other than labels are taken to match
// (the opted-in case); `withInit`: container-wide rules also reach init containers.
function applyMutation(pod, mutation, withInit) {
  const spec = pod.spec;
  const targets = (selector) => {
    const all = [...spec.containers, ...(withInit ? spec.initContainers || [] : [])];
    return selector ? all.filter((c) => selector.includes(c.name)) : all;
  };
  for (const r of mutation.rules) {
    if (r.enabled === false || !(r.labelSelectors || []).every((s) => selectorMatches(s, pod.metadata.labels))) continue;
    if (r.modifyLabel) pod.metadata.labels[r.modifyLabel.key] = r.modifyLabel.value;
    if (r.insertVolumes) spec.volumes = [...(spec.volumes || []), ...structuredClone(r.insertVolumes)];
    if (r.modifySecurityContext) {
      const ctx = r.modifySecurityContext.context;
      if (r.modifySecurityContext.containerSelector) {
        for (const c of targets(r.modifySecurityContext.containerSelector)) c.securityContext = { ...c.securityContext, ...ctx };
      } else spec.securityContext = { ...spec.securityContext, ...ctx };
    }
    if (r.insertContainer) {
      const group = r.insertContainer.containerType === "init" ? "initContainers" : "containers";
      spec[group] = [...(spec[group] || []), structuredClone(r.insertContainer.spec)];
    }
    if (r.insertVolumeMounts) {
      for (const c of targets(r.insertVolumeMounts.containerSelector)) {
        c.volumeMounts = [...(c.volumeMounts || []), ...structuredClone(r.insertVolumeMounts.volumeMounts)];
      }
    }
    if (r.modifyEnv) {
      for (const c of targets(r.modifyEnv.containerSelector)) c.env = [...(c.env || []), ...structuredClone(r.modifyEnv.env || [])];
    }
  }
}

// The volume and path inside it that `p` (absolute, in container `c`) names, or null.
function inVolume(c, p) {
  let best = null;
  for (const vm of c.volumeMounts || []) {
    const root = vm.mountPath.replace(/\/+$/, "");
    if ((p === root || p.startsWith(root + "/")) && (!best || root.length > best.root.length)) best = { root, name: vm.name };
  }
  return best && { volume: best.name, sub: path.posix.relative(best.root, p) };
}

function checkMutatedPod(pod, original, where, file) {
  const spec = pod.spec;
  const names = new Set();
  for (const v of spec.volumes || []) {
    if (names.has(v.name)) report(file, where, `volume '${v.name}' is inserted twice`);
    names.add(v.name);
  }
  for (const group of ["containers", "initContainers"]) {
    for (const c of spec[group] || []) {
      const w = `${where}.${group}[${c.name}]`;
      const paths = new Set();
      for (const vm of c.volumeMounts || []) {
        if (paths.has(vm.mountPath)) report(file, w, `mountPath ${vm.mountPath} twice (the API refuses the pod)`);
        paths.add(vm.mountPath);
        if (vm.mountPropagation === "Bidirectional" && !(c.securityContext && c.securityContext.privileged)) {
          report(file, w, "mountPropagation Bidirectional needs privileged: true");
        }
      }
      if (c.restartPolicy !== undefined && (group === "containers" || c.restartPolicy !== "Always")) {
        report(file, w, "restartPolicy is allowed only on init containers, and only Always (a native sidecar)");
      }
    }
  }
  const sidecar = (spec.initContainers || []).find((c) => c.restartPolicy === "Always");
  if (!sidecar) {
    report(file, where, "no native sidecar (init container with restartPolicy: Always)");
    return;
  }
  const env = (c, n) => [...(c.env || [])].reverse().find((e) => e.name === n);
  const link = env(sidecar, "IRSAFS_LINK")?.value;
  const mnt = env(sidecar, "IRSAFS_MOUNTPOINT")?.value;
  const target = link && mnt && path.posix.relative(path.posix.dirname(link), `${mnt}/${path.posix.basename(link)}`);
  const served = mnt && inVolume(sidecar, mnt);
  for (const c of spec.containers) {
    const w = `${where}.containers[${c.name}]`;
    const before = original.spec.containers.find((o) => o.name === c.name);
    if (!before) continue;
    if (JSON.stringify(c.securityContext) !== JSON.stringify(before.securityContext)) report(file, w, "the workload's security context changed");
    if (c.image !== before.image || JSON.stringify(c.command) !== JSON.stringify(before.command)) report(file, w, "the workload's image or command changed");
    const config = env(c, "AWS_CONFIG_FILE")?.value;
    if (config !== "/var/run/.aws/config") {
      report(file, w, `AWS_CONFIG_FILE is ${config}, not /var/run/.aws/config`);
      continue;
    }
    // The link, written by the sidecar into the config's volume, followed in the workload.
    const linkAt = inVolume(sidecar, link || "");
    const configAt = inVolume(c, config);
    if (!linkAt || !configAt || linkAt.volume !== configAt.volume || linkAt.sub !== configAt.sub) {
      report(file, w, `the sidecar's link ${link} is not the workload's ${config}`);
      continue;
    }
    const resolved = inVolume(c, path.posix.resolve(path.posix.dirname(config), target));
    if (!served || !resolved || resolved.volume !== served.volume || resolved.sub !== `${served.sub}/${path.posix.basename(link)}`) {
      report(file, w, `${config} -> ${target} does not reach the sidecar's mount ${mnt}`);
      continue;
    }
    const vm = c.volumeMounts.find((m) => m.name === resolved.volume);
    if (vm.mountPropagation !== "HostToContainer") report(file, w, `volume ${resolved.volume} needs mountPropagation: HostToContainer`);
  }
}

async function validateMutatedPods(mutation, where, file) {
  const chart = YAML.parse(fs.readFileSync(path.join(TESTDATA, "chart-1.8.0-mutation.yaml"), "utf8"));
  const pods = YAML.parseAllDocuments(fs.readFileSync(path.join(TESTDATA, "pods.yaml"), "utf8")).map((d) => d.toJS());
  for (const original of pods) {
    for (const order of [[chart, mutation], [mutation, chart]]) {
      for (const withInit of [false, true]) {
        const pod = structuredClone(original);
        pod.spec.initContainers = pod.spec.initContainers || [];
        const w = `${where} on pod ${original.metadata.name} (${order[0] === chart ? "chart first" : "ours first"}, ` +
          `${withInit ? "" : "not "}reaching init containers)`;
        try {
          for (const m of order) applyMutation(pod, m, withInit);
        } catch (e) {
          report(file, w, e.message);
          continue;
        }
        await validatePodSpec(pod.spec, w, file);
        checkMutatedPod(pod, original, w, file);
      }
    }
  }
}

function validateKustomization(doc, where, file) {
  for (const r of doc.resources || []) {
    if (!fs.existsSync(path.resolve(path.dirname(file), r))) report(file, `${where}.resources`, `${r} does not exist`);
  }
  for (const [i, img] of (doc.images || []).entries()) {
    if (!img.name) report(file, `${where}.images[${i}].name`, "missing");
  }
}

// ------------------------------------------------------------------------------------------

async function main() {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: validate-manifests.mjs FILE.yaml...");
    process.exit(2);
  }
  let checked = 0;
  for (const file of files) {
    const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { uniqueKeys: true });
    for (const [n, d] of docs.entries()) {
      const where = `document ${n + 1}`;
      for (const e of d.errors) report(file, where, `YAML: ${e.message}`);
      if (d.errors.length) continue;
      const doc = d.toJS({ maxAliasCount: 100 });
      if (doc === null || doc === undefined) continue;
      checked++;
      if (doc.kind === "Kustomization") {
        validateKustomization(doc, where, file);
        continue;
      }
      for (const k of ["apiVersion", "kind"]) if (typeof doc[k] !== "string" || !doc[k]) report(file, where, `${k} is missing`);
      if (!doc.metadata || typeof doc.metadata.name !== "string" || !doc.metadata.name) report(file, where, "metadata.name is missing");
      const label = `${where} (${doc.kind} ${doc.metadata && doc.metadata.name})`;
      if (doc.apiVersion === "apps.dominodatalab.com/v1alpha1" && doc.kind === "Mutation") {
        await validateMutation(doc, label, file);
        await validateMutatedPods(doc, label, file);
      } else if (await validateModel(doc, label, file)) {
        const spec = doc.kind === "Pod" ? doc.spec : doc.spec && doc.spec.template && doc.spec.template.spec;
        if (spec) checkVolumeRefs(spec, `${label}.spec`, file);
      } else {
        report(file, label, `unknown kind ${doc.apiVersion} ${doc.kind}: add a check to deploy/validate-manifests.mjs`);
      }
    }
  }
  if (findings.length) {
    for (const f of findings) console.error(f);
    console.error(`validate-manifests: ${findings.length} finding(s) in ${files.length} file(s)`);
    process.exit(1);
  }
  console.log(`validate-manifests: ${checked} document(s) in ${files.length} file(s): OK`);
}

await main();
