// Naive peer (`--servers node`): the npm `socket.io` server doing what most apps do, a naive
// per-message room broadcast (one `comments` event per comment to every viewer).
// Usage: node node_server.js PORT   (prints "ready PORT" when listening on 127.0.0.1)
const http = require("http");
const { Server } = require("socket.io");
const port = Number(process.argv[2] || 0);
const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ["websocket"], maxHttpBufferSize: 16384 });
const live = io.of("/live");
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
    live.to(room).emit("comments", { room, comments: [c] });
    if (typeof ack === "function") ack({ ok: true, id: c.id });
  });
});
httpServer.listen(port, "127.0.0.1", () => console.log("ready " + httpServer.address().port));
