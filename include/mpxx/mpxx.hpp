// mpxx/mpxx.hpp - Python's multiprocessing for C++20 on Linux.
// Includes the whole public API.
#pragma once

#include "mpxx/connection.hpp"
#include "mpxx/context.hpp"
#include "mpxx/errors.hpp"
#include "mpxx/log.hpp"
#include "mpxx/managers.hpp"
#include "mpxx/pool.hpp"
#include "mpxx/process.hpp"
#include "mpxx/queue.hpp"
#include "mpxx/shared.hpp"
#include "mpxx/shared_memory.hpp"
#include "mpxx/sync.hpp"
#include "mpxx/task.hpp"
#include "mpxx/version.hpp"
