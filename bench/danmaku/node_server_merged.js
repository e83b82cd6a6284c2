// The honest peer: the npm `socket.io` server with the same per-room merge as berrylive
// (`danmaku.tick_ms` = 150): comments are buffered per room and every 150 ms each room
// with something new gets ONE `comments` event ({room, comments, seq}) through socket.io's
// own room broadcast (which encodes the packet once for all its sockets).
// Usage: node node_server_merged.js PORT [TICK_MS]   (prints "ready PORT" when listening)
const http = require("http");
const { Server } = require("socket.io");
const port = Number(process.argv[2] || 0);
const tickMs = Number(process.argv[3] || 150);
const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ["websocket"], maxHttpBufferSize: 16384 });
const live = io.of("/live");
const pending = new Map(); // room -> comments since the last tick
const seqs = new Map(); // room -> batch sequence number
let seq = 0;
let users = 0;
live.on("connection", (socket) => {
  const room = String((socket.handshake.auth || {}).room || "");
  const user = "viewer" + ++users;
  socket.join(room);
  socket.emit("joined", { room, history: [] });
  socket.on("comment", (data, ack) => {
    const text = typeof data === "string" ? data : data && data.text;
    if (typeof text !== "string" || text.length > 200) {
      if (typeof ack === "function") ack({ ok: false });
      return;
    }
    const c = { id: String(++seq), user, nick: user, text, ts: Date.now(), role: "viewer" };
    let buf = pending.get(room);
    if (buf === undefined) pending.set(room, (buf = []));
    buf.push(c);
    if (typeof ack === "function") ack({ ok: true, id: c.id });
  });
});
setInterval(() => {
  for (const [room, comments] of pending) {
    if (comments.length === 0) continue;
    const n = (seqs.get(room) || 0) + 1;
    seqs.set(room, n);
    pending.set(room, []);
    live.to(room).emit("comments", { room, comments, seq: n });
  }
}, tickMs);
httpServer.listen(port, "127.0.0.1", () => console.log("ready " + httpServer.address().port));
