// A frontend team's client of Tessera, typed entirely by the types that
// `openapi-typescript` generates from the service's OpenAPI document. It uses
// no cast and no `any`: if the document and the server disagree, this either
// fails to compile or fails here at run time, and CI says which.
//
// TESSERA_URL=http://127.0.0.1:8000 npm start

import { randomUUID } from "node:crypto";

import createClient, { type Middleware } from "openapi-fetch";

import type { components, paths } from "../generated/api.js";

type Schemas = components["schemas"];
type TokenPair = Schemas["TokenResponse"];
type Status = Schemas["Status"];

/** The statuses after which an execution never changes again. */
const FINISHED: ReadonlySet<Status> = new Set<Status>(["succeeded", "failed", "cancelled"]);

const baseUrl = process.env["TESSERA_URL"];
if (baseUrl === undefined || baseUrl === "") {
  throw new Error("Set TESSERA_URL to the service's address, e.g. http://127.0.0.1:8000.");
}

const api = createClient<paths>({ baseUrl });

/** The access token every request after sign-in carries. */
let accessToken: string | undefined;

const bearer: Middleware = {
  onRequest({ request }) {
    if (accessToken !== undefined) {
      request.headers.set("Authorization", `Bearer ${accessToken}`);
    }
    return request;
  },
};
api.use(bearer);

/** What every openapi-fetch call answers: the body on success, the problem otherwise. */
interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The body of a successful answer; on any other, an error naming the step and the problem. */
function expectOk<T>(step: string, answer: Answer<T>): T {
  if (answer.data === undefined) {
    throw new Error(
      `${step}: HTTP ${answer.response.status} ${JSON.stringify(answer.error ?? null)}`,
    );
  }
  return answer.data;
}

/** Fails the run with `message` unless `condition` holds. */
function check(condition: boolean, message: string): void {
  if (!condition) {
    throw new Error(message);
  }
}

/** The OAuth2 password grant as `application/x-www-form-urlencoded`. */
function formEncoded(form: Schemas["TokenForm"]): URLSearchParams {
  const encoded = new URLSearchParams();
  for (const [name, value] of Object.entries(form)) {
    if (typeof value === "string") {
      encoded.set(name, value);
    }
  }
  return encoded;
}

/** Signs in with the password grant. */
async function signIn(username: string, password: string): Promise<TokenPair> {
  const answer = await api.POST("/api/v1/auth/token", {
    body: { grant_type: "password", username, password },
    bodySerializer: formEncoded,
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  return expectOk("sign in", answer);
}

/** One Server-Sent Events message. */
interface SseMessage {
  event: string;
  id: string | undefined;
  data: unknown;
}

/** The messages of an event stream, parsed as they arrive, until the server ends it. */
async function* sseMessages(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buffered += decoder.decode(value, { stream: true }).replaceAll("\r\n", "\n");
    let end = buffered.indexOf("\n\n");
    while (end !== -1) {
      const message = parseSseBlock(buffered.slice(0, end));
      buffered = buffered.slice(end + 2);
      if (message !== undefined) {
        yield message;
      }
      end = buffered.indexOf("\n\n");
    }
  }
}

/** One message's fields; `undefined` for a block of comments (keep-alives). */
function parseSseBlock(block: string): SseMessage | undefined {
  let event = "message";
  let id: string | undefined;
  const data: string[] = [];
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    if (colon === 0) {
      continue;
    }
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") {
      event = value;
    } else if (field === "id") {
      id = value;
    } else if (field === "data") {
      data.push(value);
    }
  }
  if (data.length === 0) {
    return undefined;
  }
  const parsed: unknown = JSON.parse(data.join("\n"));
  return { event, id, data: parsed };
}

/** The `status` a status event's data names, if it names one the document lists. */
function statusOf(data: unknown): Status | undefined {
  if (typeof data !== "object" || data === null || !("status" in data)) {
    return undefined;
  }
  const status = data.status;
  const known: readonly Status[] = ["queued", "running", "succeeded", "failed", "cancelled"];
  return known.find((candidate) => candidate === status);
}

/** Follows an execution's event stream until it ends; returns the last status it reported. */
async function follow(id: string): Promise<Status> {
  const answer = await api.GET("/api/v1/executions/{id}/events", {
    params: { path: { id } },
    parseAs: "stream",
  });
  const body = expectOk(`follow ${id}`, answer);
  check(body !== null, `the event stream of ${id} has a body`);
  let last: Status | undefined;
  let progressEvents = 0;
  if (body !== null) {
    for await (const message of sseMessages(body)) {
      if (message.event === "status") {
        last = statusOf(message.data) ?? last;
      } else if (message.event === "progress") {
        progressEvents += 1;
      }
    }
  }
  check(last !== undefined, `the event stream of ${id} reported a status`);
  console.log(`followed ${id}: ${progressEvents} progress events, ended ${last ?? "?"}`);
  return last ?? "queued";
}

/** A vector's length, whichever encoding it came in. */
function dimensionsOf(vector: Schemas["EmbeddingVector"]): number {
  return Array.isArray(vector) ? vector.length : Buffer.from(vector, "base64").length / 4;
}

async function main(): Promise<void> {
  const email = `ts-client-${randomUUID()}@example.com`;
  const password = "a typed client's password";

  const created = expectOk(
    "sign up",
    await api.POST("/api/v1/users", {
      body: { email, full_name: "TypeScript Client", password },
    }),
  );
  check(created.email === email && created.role === "user", "the new account is a user");

  const first = await signIn(email, password);
  check(first.token_type === "bearer", "sign-in gives a bearer token");
  const refreshed = expectOk(
    "refresh",
    await api.POST("/api/v1/auth/refresh", { body: { refresh_token: first.refresh_token } }),
  );
  check(refreshed.refresh_token !== first.refresh_token, "refreshing rotates the refresh token");
  accessToken = refreshed.access_token;

  const me = expectOk("me", await api.GET("/api/v1/users/me"));
  check(me.id === created.id, "`me` is the account just created");

  const models = expectOk("models", await api.GET("/api/v1/inference/models"));
  const model = models.data[0];
  if (model === undefined) {
    throw new Error("the service lists no model");
  }

  const one = expectOk(
    "embeddings of one text",
    await api.POST("/api/v1/inference/embeddings", {
      body: { model: model.id, input: "A man is eating food." },
    }),
  );
  const many = expectOk(
    "embeddings of texts",
    await api.POST("/api/v1/inference/embeddings", {
      body: { model: model.id, input: ["A man is eating food.", "A man rides a horse."] },
    }),
  );
  check(one.data.length === 1 && many.data.length === 2, "one vector per input");
  for (const item of [...one.data, ...many.data]) {
    check(
      dimensionsOf(item.embedding) === model.dimensions,
      `every vector has ${model.dimensions} dimensions`,
    );
  }
  console.log(`embedded 3 texts with ${model.id} (${model.dimensions} dimensions)`);

  const sleep = expectOk(
    "submit sleep",
    await api.POST("/api/v1/executions", {
      body: { kind: "sleep", input: { duration_ms: 300, steps: 3 } },
    }),
  );
  const embedTexts = expectOk(
    "submit embed_texts",
    await api.POST("/api/v1/executions", {
      body: {
        kind: "embed_texts",
        input: { model: model.id, texts: ["A man is eating food.", "A man rides a horse."] },
      },
    }),
  );

  const listed = expectOk("list executions", await api.GET("/api/v1/executions", {
    params: { query: { limit: 10 } },
  }));
  const listedIds = new Set(listed.items.map((item) => item.id));
  check(
    listedIds.has(sleep.id) && listedIds.has(embedTexts.id),
    "the list holds both executions",
  );

  for (const execution of [sleep, embedTexts]) {
    const status = await follow(execution.id);
    check(status === "succeeded", `${execution.kind} ${execution.id} succeeded, not ${status}`);
    const finished = expectOk(
      `get ${execution.id}`,
      await api.GET("/api/v1/executions/{id}", { params: { path: { id: execution.id } } }),
    );
    check(FINISHED.has(finished.status), `${execution.id} is finished`);
  }

  const vectors = expectOk(
    "embed_texts vectors",
    await api.GET("/api/v1/inference/batches/{execution_id}/embeddings", {
      params: { path: { execution_id: embedTexts.id } },
    }),
  );
  check(vectors.data.length === 2, "embed_texts stored one vector per text");

  // A program's credential: an API key limited to inference, shown once.
  const key = expectOk(
    "create an API key",
    await api.POST("/api/v1/auth/api-keys", {
      body: { name: "typed client", scopes: ["inference"], current_password: password },
    }),
  );
  check(key.secret.startsWith(key.prefix), "the key starts with its prefix");
  const keys = expectOk("list API keys", await api.GET("/api/v1/auth/api-keys"));
  check(
    keys.items.some((item) => item.id === key.id && !JSON.stringify(item).includes(key.secret)),
    "the list shows the key but not its secret",
  );
  const program = createClient<paths>({
    baseUrl,
    headers: { Authorization: `Bearer ${key.secret}` },
  });
  const byKey = expectOk(
    "embeddings with the API key",
    await program.POST("/api/v1/inference/embeddings", {
      body: { model: model.id, input: "A program's text." },
    }),
  );
  check(byKey.data.length === 1, "the key embeds");
  const outOfScope = await program.GET("/api/v1/executions");
  check(outOfScope.response.status === 403, "an inference key cannot read executions");
  const revoked = await api.DELETE("/api/v1/auth/api-keys/{key_id}", {
    params: { path: { key_id: key.id } },
  });
  check(revoked.response.status === 204, "revoking answers 204");
  const afterRevocation = await program.GET("/api/v1/inference/models");
  check(afterRevocation.response.status === 401, "a revoked key is refused");
  console.log(`created, used, listed and revoked API key ${key.prefix}`);

  const loggedOut = await api.POST("/api/v1/auth/logout", {
    body: { refresh_token: refreshed.refresh_token },
  });
  check(loggedOut.response.status === 204, "logout answers 204");
  console.log("the typed client passed every step");
}

await main();
