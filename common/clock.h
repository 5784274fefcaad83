// Time and randomness behind interfaces, so that retry schedules, deadlines and refreshes are
// tested with fakes and without sleeping.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <stop_token>

namespace irsafs {

using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  virtual WallTime wall_now() const = 0;
  // Sleeps until `t`; returns false early when `stop` is requested.
  virtual bool sleep_until(TimePoint t, std::stop_token stop) = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  WallTime wall_now() const override { return std::chrono::system_clock::now(); }
  bool sleep_until(TimePoint t, std::stop_token stop) override {
    std::unique_lock lock(mu_);
    return !cv_.wait_until(lock, stop, t, [] { return false; }) && !stop.stop_requested();
  }

 private:
  std::mutex mu_;
  std::condition_variable_any cv_;
};

class Random {
 public:
  virtual ~Random() = default;
  // Uniform in [0, 1).
  virtual double uniform01() = 0;
};

class SystemRandom final : public Random {
 public:
  SystemRandom() : gen_(std::random_device{}()) {}
  double uniform01() override {
    std::lock_guard lock(mu_);
    return std::uniform_real_distribution<double>(0.0, 1.0)(gen_);
  }

 private:
  std::mutex mu_;
  std::mt19937_64 gen_;
};

}  // namespace irsafs
