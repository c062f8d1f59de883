#include "corral/base/resources.h"

#include <gtest/gtest.h>

namespace corral {
namespace {

ResourceSet Make(std::initializer_list<std::pair<const char*, double>> items) {
  ResourceSet r;
  for (auto& [k, v] : items) r.Set(k, v);
  return r;
}

TEST(ResourceSet, ContainsAndArithmetic) {
  ResourceSet node = Make({{"CPU", 4}, {"GPU", 1}});
  EXPECT_TRUE(node.Contains(Make({{"CPU", 2}})));
  EXPECT_FALSE(node.Contains(Make({{"CPU", 5}})));
  EXPECT_FALSE(node.Contains(Make({{"laptop", 1}})));
  node.Subtract(Make({{"CPU", 0.5}, {"GPU", 1}}));
  EXPECT_DOUBLE_EQ(node.Get("CPU"), 3.5);
  EXPECT_DOUBLE_EQ(node.Get("GPU"), 0);
  EXPECT_FALSE(node.Contains(Make({{"GPU", 0.5}})));
  node.Add(Make({{"CPU", 0.5}, {"GPU", 1}}));
  EXPECT_EQ(node, Make({{"CPU", 4}, {"GPU", 1}}));
}

TEST(ResourceSet, FractionsDoNotDrift) {
  ResourceSet r = Make({{"CPU", 1}});
  ResourceSet tenth = Make({{"CPU", 0.1}});
  for (int i = 0; i < 10; ++i) r.Subtract(tenth);
  EXPECT_TRUE(r.empty());
}

TEST(ResourceSet, Utilization) {
  ResourceSet total = Make({{"CPU", 4}});
  ResourceSet free = Make({{"CPU", 3}});
  EXPECT_DOUBLE_EQ(free.UtilizationAfter(Make({{"CPU", 1}}), total), 0.5);
}

TEST(Parse, Memory) {
  EXPECT_EQ(*ParseMemory("4GiB"), 4LL << 30);
  EXPECT_EQ(*ParseMemory("512MiB"), 512LL << 20);
  EXPECT_EQ(*ParseMemory("1.5GB"), 1500000000LL);
  EXPECT_EQ(*ParseMemory("1000"), 1000);
  EXPECT_FALSE(ParseMemory("lots").has_value());
  EXPECT_FALSE(ParseMemory("-1GiB").has_value());
}

TEST(Parse, KeyValues) {
  auto kv = ParseAmounts("laptop=1, ssd=2.5");
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->at("laptop"), 1);
  EXPECT_EQ(kv->at("ssd"), 2.5);
  EXPECT_FALSE(ParseAmounts("laptop").has_value());
  EXPECT_FALSE(ParseAmounts("a=x").has_value());
  EXPECT_TRUE(ParseAmounts("")->empty());
  EXPECT_EQ(ParseLabels("zone=office")->at("zone"), "office");
  EXPECT_EQ(FormatPairs(*ParseLabels("zone=office,os=linux")), "os=linux,zone=office");
  EXPECT_EQ(FormatPairs(*ParseAmounts("GPU=1,ssd=2.5")), "GPU=1,ssd=2.5");
  EXPECT_TRUE(ParseAmounts(FormatPairs(std::map<std::string, double>{}))->empty());
}

TEST(Parse, Rates) {
  EXPECT_DOUBLE_EQ(*ParseRate("10/s"), 10);
  EXPECT_DOUBLE_EQ(*ParseRate("120/m"), 2);
  EXPECT_DOUBLE_EQ(*ParseRate("36 / h"), 0.01);
  EXPECT_DOUBLE_EQ(*ParseRate("2.5"), 2.5);
  EXPECT_FALSE(ParseRate("10/d").has_value());
  EXPECT_FALSE(ParseRate("fast").has_value());
  EXPECT_FALSE(ParseRate("-1/s").has_value());
}

}  // namespace
}  // namespace corral
