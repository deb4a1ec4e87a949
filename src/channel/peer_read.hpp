// src/channel/peer_read.hpp - large values read straight from the sender's memory.
// Internal.
//
// Between the two ends of a Pipe with a shared-memory ring (both made by
// this program), a large value's payload is not pushed through a pipe: the
// sender offers where its bytes are (the encode buffer's and the value's
// own blocks, Writer::pieces), with a pidfd of itself and one end of an
// answer socket, and waits. The receiver copies the bytes with
// process_vm_readv(2), straight into the value being decoded: one copy,
// with no pipe-full of handing back and forth between the two processes.
// It then answers 'D' (done), and the sender's send() returns.
//
// Where the kernel does not let one process read another's memory (a
// seccomp filter, Yama's ptrace_scope, a process made non-dumpable), the
// receiver's first read fails and it answers 'P' (push): the sender then
// streams the payload through the pipe it sent along, as it does for every
// other mpxx peer (large_message.cpp, splice_out).
//
// The sender's pidfd guards against a sender that dies while its memory is
// read: after every read the receiver checks that the sender is still
// alive, so bytes read from a process that took over its pid are never
// used (that is an EOFError, as a pipe's end in the middle of a message).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "mpxx/detail/buffer.hpp"
#include "mpxx/detail/frame.hpp"
#include "sys/fd.hpp"

namespace mpxx::detail {

// ------------------------------------------------------------- the sender

struct PeerReadGrant {
  sys::UniqueFd pidfd;   // this process, sent along
  sys::UniqueFd answer;  // the sender's end of the answer socket
  sys::UniqueFd asker;   // the receiver's end, sent along
};
// Nothing if this process cannot name itself with a pidfd (kernels before
// 5.3): the payload then goes through the pipe.
std::optional<PeerReadGrant> make_peer_read_grant();

enum class PeerReadAnswer {
  done,  // the receiver read what it needed: the memory may change again
  push,  // the receiver may not read this process's memory: stream it
  gone,  // the receiver went away without answering
};
// Waits for the receiver's answer (restarting after signals).
PeerReadAnswer await_peer_read_answer(int answer_fd);

// The grant's payload after the 8-byte size: (address, length) pairs,
// 16 bytes per piece at `out` (PeerReadSource reads them).
void write_peer_read_pieces(std::byte* out, std::span<const std::span<const std::byte>> pieces);

// ----------------------------------------------------------- the receiver

// The pid a pidfd names, as this process sees it: 0 if that cannot be told
// (no /proc, or a /proc of another pid namespace), -1 if the process has
// exited. ProtocolError if the fd is not a pidfd.
pid_t pidfd_pid(int pidfd);
// A pidfd for process `pid` if it is still the one that started at
// `start_time` and is alive; nothing otherwise, with `gone` set if that
// process is known to have exited (or its pid to name another process).
sys::UniqueFd open_process(pid_t pid, std::uint64_t start_time, bool& gone);

// Reads a peer-read payload as the decoder asks for it.
class PeerReadSource final : public wire::Source {
 public:
  // `pieces`: the grant's (address, length) pairs, `size` bytes in all
  // (checked against them), in the memory of process `pid` (0: unknown),
  // whose `pidfd` came with them. `asker`, if any, is the receiver's end of
  // the answer socket (the destructor answers 'D' on it unless a read
  // failed).
  PeerReadSource(std::span<const std::byte> pieces, std::uint64_t size, pid_t pid, sys::UniqueFd pidfd,
               sys::UniqueFd asker = {});
  PeerReadSource(const PeerReadSource&) = delete;
  PeerReadSource& operator=(const PeerReadSource&) = delete;
  ~PeerReadSource() override;

  // Reads the first n bytes into `out`. False if this process may not read
  // the sender's memory (or could not read its first byte): the sender has
  // been asked to push the payload through its pipe, and this source must
  // not be used.
  bool start(wire::Writer& out, std::size_t n);

  std::size_t left() const noexcept override { return static_cast<std::size_t>(left_); }
  void read(void* out, std::size_t n) override;
  // True once a read found the sender gone (the EOFError it raised).
  bool sender_lost() const noexcept { return lost_; }
  // True once a read failed (the sender gone, or another error).
  bool read_failed() const noexcept { return failed_; }

 private:
  struct Position {
    std::size_t piece = 0;   // the piece the next byte comes from
    std::size_t offset = 0;  // and where in it
  };
  // One process_vm_readv of up to n bytes from `at`: the bytes read, or -1
  // with errno set.
  long read_some(Position at, std::byte* out, std::size_t n) const noexcept;
  // Reads n bytes from `at`: 0, or the errno that stopped it (ESRCH: the
  // sender is gone).
  int copy(Position at, std::byte* out, std::size_t n) const noexcept;
  void advance(Position& at, std::size_t n) const noexcept;
  void answer(char what) noexcept;

  std::vector<iovec> pieces_;
  Position at_;
  std::uint64_t left_;
  pid_t pid_ = 0;
  sys::UniqueFd pidfd_;
  sys::UniqueFd asker_;
  bool failed_ = false;  // a read failed: the sender gets no answer, and raises
  bool lost_ = false;
};

}  // namespace mpxx::detail
