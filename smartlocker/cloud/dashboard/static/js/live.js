// The live feed: server-sent events from /dashboard/stream, read with fetch() and a
// ReadableStream because EventSource cannot send the Authorization header.
// Reconnects with a growing pause; `onNote({kind, ...})` gets every note, and a
// {kind: "resync"} whenever notes may have been missed (re-read everything): at every
// "hello", the first one included, since the page read its data while the feed was
// still connecting, and a change between that read and the feed's start sends no note.

import { authHeaders } from "./api.js";

export function connectLive(onNote, onState = () => {}) {
  let stopped = false;
  let controller = null;
  let pause = 500;

  async function once() {
    controller = new AbortController();
    onState("connecting");
    const response = await fetch("/dashboard/stream", {
      headers: { ...authHeaders(), Accept: "text/event-stream" },
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok || !response.body) throw new Error(`stream: HTTP ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = parse(block);
        if (!event) continue;
        if (event.name === "hello") {
          onState("live");
          pause = 500;
          // Whatever happened before the feed was live: read it again.
          onNote({ kind: "resync" });
        } else if (event.name !== "bye") {
          onNote(event.data);
        }
      }
    }
  }

  async function loop() {
    let connectedBefore = false;
    while (!stopped) {
      try {
        await once();
      } catch (err) {
        if (stopped) return;
        console.warn("live feed:", err);
      }
      if (stopped) return;
      onState("offline");
      if (connectedBefore) onNote({ kind: "resync" });
      connectedBefore = true;
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 15000);
    }
  }

  loop();
  return {
    close() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}

function parse(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (!data.length) return null;
  try {
    return { name, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}
